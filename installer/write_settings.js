// The MSI's JScript custom actions (installer/r4agent.wxs).
//
// writeSettings: deferred (runs as LocalSystem, after `r4agent.exe service prepare` made the
// data folder private to SYSTEM + Administrators). It writes the install settings handed over in
// CustomActionData into that folder; `r4agent.exe service configure` merges them into
// config.toml and deletes the file. Secrets never appear on a command line.
// CustomActionData: "<data dir>\|~|LICENCEKEY=...|~|BACKENDURL=...|~|..."
function writeSettings() {
    var separator = "|~|";
    var data = Session.Property("CustomActionData");
    var at = data.indexOf(separator);
    if (at < 0) {
        return 3; // IDABORT: malformed hand-over, fail the install
    }
    var dir = data.substring(0, at);
    var fso = new ActiveXObject("Scripting.FileSystemObject");
    var file = fso.CreateTextFile(dir + "install-settings.txt", true, true);
    file.Write(data.substring(at + separator.length));
    file.Close();
    return 1; // IDOK
}

// Immediate MSI custom action, sequenced after R4WriteSettings was scheduled (its
// CustomActionData is fixed then): empties the properties that held secrets, so the property
// dump at the end of a verbose log holds none of them, whether or not the installer honours
// MsiHiddenProperties.
function forgetSecrets() {
    var names = ["LICENCEKEY", "DBCONNECTION", "SQLUSER", "SQLPASSWORD", "R4WriteSettings"];
    for (var i = 0; i < names.length; i++) {
        Session.Property(names[i]) = "";
    }
    return 1; // IDOK
}
