"""`r4agent doctor` against the real stand-ins: the Flynotes backend stand-in, moto's SQS
server, the R4 sample database through pyodbc + SQLite3, the fake Rollbar endpoint and a real
TUF repository on disk served over loopback HTTP (the Windows service's state is the one thing
injected: Linux has no service manager). One all-green run, then one test per broken thing,
each checking the ✗, the words for what happened, the hint and that later checks that depend
on it are skipped with the reason."""

from __future__ import annotations

import io
import json
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyodbc
import pytest

from agent.clock import FakeClock
from agent.doctor import CheckResult, Doctor, Status, exit_code, render
from agent.r4.connection import R4Database, describe_target, translate_error
from agent.r4.connection_plan import DbSettings, connection_plan
from agent.r4.sql import REQUIRED_COLUMNS
from agent.standin.backend import StandinBackend
from agent.standin.r4_sample import sqlite_connection_string
from agent.standin.sqs_local import SqsEndpoint
from installer.service import ServiceState
from tests.fixtures.driver_errors import SQL_LOGIN_REFUSED, SYSTEM_REFUSED
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.r4_database import MakeR4Db, R4SampleDb
from tests.fixtures.rollbar_endpoint import FakeRollbar
from tests.updater.support import RepoSim, make_repo, serve

ROLLBAR_TOKEN = "doctor-rollbar-token-77aa"


@dataclass
class Practice:
    tmp: Path
    backend: StandinBackend
    sqs: SqsEndpoint
    rollbar: FakeRollbar
    connection_string: str
    backend_url: str = ""
    rollbar_url: str = ""
    extra: str = ""
    rollbar_token: bool = True
    data_dir: Path | None = None
    update_url: str = ""
    trusted_root: bytes | None = None  # the installed agent's metadata/root.json
    service: ServiceState = field(default_factory=lambda: ServiceState(True, "running"))
    timeout_s: float = 5

    def write_config(self) -> Path:
        path = self.tmp / "config.toml"
        data_dir = self.data_dir or self.tmp / "data"
        token = f'access_token = "{ROLLBAR_TOKEN}"\n' if self.rollbar_token else ""
        update = f'update_url = "{self.update_url}"' if self.update_url else ""
        if self.trusted_root is not None:
            (data_dir / "metadata").mkdir(parents=True, exist_ok=True)
            (data_dir / "metadata" / "root.json").write_bytes(self.trusted_root)
        path.write_text(
            f"""
licence_key = "{TEST_LICENCE_KEY}"
backend_url = "{self.backend_url or self.backend.url}"
sqs_endpoint_url = "{self.sqs.endpoint_url}"
data_dir = "{data_dir}"
{update}
{self.extra}
[database]
connection_string = "{self.connection_string}"

[rollbar]
{token}endpoint = "{self.rollbar_url or self.rollbar.url}"
environment = "doctor-test"
""",
            encoding="utf-8",
        )
        return path

    def doctor(self) -> tuple[dict[str, CheckResult], str, int]:
        doctor = Doctor(
            self.write_config(),
            {},
            clock=FakeClock(datetime.now(UTC)),
            timeout_s=self.timeout_s,
            query_service=lambda: self.service,
        )
        results = doctor.run()
        out = io.StringIO()
        render(results, out)
        return {r.name: r for r in results}, out.getvalue(), exit_code(results)


@pytest.fixture(scope="module")
def update_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RepoSim, str]]:
    """A signed update repository with 1.0.0 (throwaway keys), served over loopback HTTP."""
    sim = make_repo(tmp_path_factory.mktemp("doctor-updates"))
    sim.add("1.0.0")
    for served in serve(sim.repo_dir):
        yield sim, served.url


@pytest.fixture
def practice(
    tmp_path: Path,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
    rollbar_endpoint: FakeRollbar,
    r4_sample_db: R4SampleDb,
    update_repo: tuple[RepoSim, str],
) -> Practice:
    flynotes_standin.sqs_queue_url = sqs_server.queue_url
    flynotes_standin.sqs_region = sqs_server.region
    flynotes_standin.set_credentials(
        sqs_server.access_key_id, sqs_server.secret_access_key, sqs_server.session_token
    )
    return Practice(
        tmp=tmp_path,
        backend=flynotes_standin,
        sqs=sqs_server,
        rollbar=rollbar_endpoint,
        connection_string=r4_sample_db.connection_string,
        update_url=update_repo[1],
        trusted_root=update_repo[0].repo.root_bytes(),
    )


def _closed_port_url(path: str = "/") -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return f"http://127.0.0.1:{port}{path}"


def _skipped_because(result: CheckResult, needed: str) -> bool:
    return result.status is Status.SKIP and f"needs '{needed}'" in result.detail


def test_all_green_on_a_healthy_practice(practice: Practice) -> None:
    results, text, code = practice.doctor()
    assert code == 0, text
    assert {name: r.status for name, r in results.items()} == {
        "config": Status.OK,
        "ODBC drivers": Status.OK,
        "R4 database": Status.OK,
        "R4 schema": Status.OK,
        "backend + licence": Status.OK,
        "SQS queue": Status.OK,
        "clock skew": Status.OK,
        "update repository": Status.OK,
        "data directory": Status.OK,
        "Rollbar": Status.OK,
        "Windows service": Status.OK,
    }, text
    assert text.count("✓") == 11 and "all checks passed" in text
    update = results["update repository"].detail
    assert "its metadata verifies against the trusted root in" in update
    assert "(1 release(s) listed, newest 1.0.0)" in update
    assert "with a dead-letter queue" in results["SQS queue"].detail
    assert practice.rollbar.pings == 1 and practice.rollbar.items == []  # no item posted
    assert [r.path.split("/")[-1] for r in practice.backend.received] == ["data"]
    assert not list((practice.tmp / "data").glob(".doctor-*"))  # its probe file is gone


def test_no_secret_is_printed(practice: Practice) -> None:
    practice.backend.fail_next(5, status=500)  # failing output names more things
    _, text, _ = practice.doctor()
    for secret in (
        TEST_LICENCE_KEY,
        ROLLBAR_TOKEN,
        practice.sqs.secret_access_key,
        practice.sqs.session_token,
    ):
        assert secret not in text


def test_bad_config_fails_with_file_and_key_and_skips_what_needs_it(practice: Practice) -> None:
    practice.backend_url = "flynotes.example/no-scheme"
    results, text, code = practice.doctor()
    assert code == 1
    assert results["config"].status is Status.FAIL
    assert "'backend_url'" in results["config"].detail and "config.toml" in text
    assert results["ODBC drivers"].status is Status.WARN  # runs, but cannot tell which is needed
    assert "SQLite3" in results["ODBC drivers"].detail
    for name in ("R4 database", "backend + licence", "data directory", "Rollbar"):
        assert _skipped_because(results[name], "config"), results[name]
    assert _skipped_because(results["R4 schema"], "R4 database")
    assert _skipped_because(results["SQS queue"], "backend + licence")
    assert "✗ config" in text and "fix:" in text


def test_missing_config_file(tmp_path: Path) -> None:
    results = Doctor(tmp_path / "absent.toml", {}).run()
    assert results[0].status is Status.FAIL and "config file not found" in results[0].detail
    assert exit_code(results) == 1


def test_odbc_driver_named_in_connection_string_not_installed(practice: Practice) -> None:
    practice.connection_string = "Driver={ODBC Driver 18 for SQL Server};Server=R4;Database=sys2000"
    results, _text, code = practice.doctor()
    assert code == 1
    drivers = results["ODBC drivers"]
    assert drivers.status is Status.FAIL and "'ODBC Driver 18 for SQL Server'" in drivers.detail
    assert "SQLite3" in drivers.detail and "install that driver" in drivers.hint
    assert _skipped_because(results["R4 database"], "ODBC drivers")
    assert _skipped_because(results["R4 schema"], "R4 database")
    assert results["backend + licence"].status is Status.OK  # independent checks still run


def test_no_sql_server_driver_when_using_the_default_connection(practice: Practice) -> None:
    practice.connection_string = ""
    path = practice.write_config()
    path.write_text(
        path.read_text(encoding="utf-8").replace('connection_string = ""\n', ""),
        encoding="utf-8",
    )
    results = Doctor(path, {}, list_drivers=lambda: ["SQLite3"]).run()
    drivers = {r.name: r for r in results}["ODBC drivers"]
    assert drivers.status is Status.FAIL and "no SQL Server ODBC driver" in drivers.detail
    assert "ODBC Driver 18 for SQL Server" in drivers.hint


def test_database_unreachable(practice: Practice, tmp_path: Path) -> None:
    practice.connection_string = sqlite_connection_string(tmp_path / "no" / "such" / "dir.db")
    results, _, code = practice.doctor()
    assert code == 1
    assert results["R4 database"].status is Status.FAIL and results["R4 database"].hint
    assert _skipped_because(results["R4 schema"], "R4 database")


def test_schema_missing_a_column_names_it(practice: Practice, make_r4_db: MakeR4Db) -> None:
    broken = make_r4_db(drop_columns=(("patients", "mobileNo"),))
    practice.connection_string = broken.connection_string
    results, _text, code = practice.doctor()
    assert code == 1
    schema = results["R4 schema"]
    assert schema.status is Status.FAIL and "patients.mobileNo" in schema.detail
    assert "sys2000" in schema.hint


def test_licence_rejected_says_check_the_key_and_skips_sqs_and_clock(practice: Practice) -> None:
    practice.backend.reject_licence()
    results, _text, code = practice.doctor()
    assert code == 1
    backend = results["backend + licence"]
    assert backend.status is Status.FAIL and "rejected" in backend.detail
    assert "licence_key" in backend.hint
    assert _skipped_because(results["SQS queue"], "backend + licence")
    assert _skipped_because(results["clock skew"], "backend + licence")
    assert results["R4 database"].status is Status.OK


def test_backend_refusing_connections_is_called_refused(practice: Practice) -> None:
    practice.backend_url = _closed_port_url()
    results, _, code = practice.doctor()
    assert code == 1
    backend = results["backend + licence"]
    assert backend.status is Status.FAIL and "proxy" in backend.hint
    assert "refused the connection (nothing listens there" in backend.detail


def test_a_backend_name_that_does_not_exist_is_called_so(practice: Practice) -> None:
    practice.backend_url = "https://r4agent-doctor-test.invalid/"
    results, _, _ = practice.doctor()
    detail = results["backend + licence"].detail
    assert detail.startswith("r4agent-doctor-test.invalid does not exist (DNS knows no such name)")
    assert TEST_LICENCE_KEY not in detail


def test_a_proxy_that_refuses_is_named_as_the_proxy(practice: Practice) -> None:
    practice.extra = f'proxy = "{_closed_port_url()}"'
    results, _, _ = practice.doctor()
    assert results["backend + licence"].detail.startswith("the proxy 127.0.0.1:")
    assert "refused the connection" in results["backend + licence"].detail


def test_backend_5xx(practice: Practice) -> None:
    practice.backend.fail_next(10, status=503)
    results, _, code = practice.doctor()
    assert code == 1 and results["backend + licence"].status is Status.FAIL


def test_sqs_queue_missing(practice: Practice) -> None:
    practice.backend.sqs_queue_url = practice.sqs.queue_url + "-gone"
    results, _, code = practice.doctor()
    assert code == 1
    sqs = results["SQS queue"]
    assert sqs.status is Status.FAIL and "does not exist" in sqs.hint


def test_sqs_unreachable(practice: Practice) -> None:
    practice.extra = ""
    closed = _closed_port_url("")
    practice.sqs = SqsEndpoint(
        endpoint_url=closed,
        region=practice.sqs.region,
        queue_url=practice.sqs.queue_url,
        dead_letter_queue_url="",
        access_key_id=practice.sqs.access_key_id,
        secret_access_key=practice.sqs.secret_access_key,
        session_token=practice.sqs.session_token,
    )
    results, _, code = practice.doctor()
    assert code == 1
    sqs = results["SQS queue"]
    assert sqs.status is Status.FAIL and "unreachable" in sqs.detail and "HTTPS" in sqs.hint
    assert "refused the connection" in sqs.detail


def test_clock_skew_over_two_minutes_warns_but_passes(practice: Practice) -> None:
    practice.backend.clock_offset = timedelta(minutes=5)
    results, text, code = practice.doctor()
    skew = results["clock skew"]
    assert skew.status is Status.WARN and "behind" in skew.detail and "w32tm" in skew.hint
    assert code == 0 and "! clock skew" in text


def test_clock_skew_beyond_what_aws_accepts_fails(practice: Practice) -> None:
    practice.backend.clock_offset = timedelta(minutes=-20)
    results, _, code = practice.doctor()
    assert (
        results["clock skew"].status is Status.FAIL and "ahead of" in results["clock skew"].detail
    )
    assert code == 1


def test_data_directory_not_writable(practice: Practice, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    practice.data_dir = blocker / "data"
    practice.trusted_root = None  # (it would live in that data directory)
    results, _, code = practice.doctor()
    assert code == 1
    data = results["data directory"]
    assert data.status is Status.FAIL and "not writable" in data.detail and "data_dir" in data.hint


def test_rollbar_unreachable(practice: Practice) -> None:
    practice.rollbar_url = _closed_port_url("/api/1/")
    results, _, code = practice.doctor()
    assert code == 1
    rb = results["Rollbar"]
    assert rb.status is Status.FAIL and "unreachable" in rb.detail and rb.hint
    assert "refused the connection" in rb.detail


def test_rollbar_answering_errors(practice: Practice) -> None:
    practice.rollbar.status = 503
    results, _, code = practice.doctor()
    assert code == 1 and "HTTP 503" in results["Rollbar"].detail


def test_no_rollbar_token_is_a_skip_not_a_failure(practice: Practice) -> None:
    practice.rollbar_token = False
    results, _, code = practice.doctor()
    assert results["Rollbar"].status is Status.SKIP and "local log" in results["Rollbar"].detail
    assert code == 0


def test_cli_runs_doctor_with_config_flag(
    practice: Practice, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    code = main(["doctor", "--config", str(practice.write_config())])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "doctor:" in out and "all checks passed" in out


def test_ascii_console_gets_words_instead_of_symbols() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")
    render(
        [CheckResult("config", Status.OK, "fine"), CheckResult("x", Status.FAIL, "bad", "do y")],
        stream,
    )
    stream.seek(0)
    text = stream.read()
    assert "OK   config" in text and "FAIL x" in text and "fix: do y" in text


# -- the update repository ------------------------------------------------------------------
def test_a_dead_update_url_fails_instead_of_all_checks_passed(practice: Practice) -> None:
    practice.update_url = _closed_port_url("/r4agent")
    results, text, code = practice.doctor()
    update = results["update repository"]
    assert code == 1 and update.status is Status.FAIL and "all checks passed" not in text
    assert "unreachable: 127.0.0.1:" in update.detail and "refused the connection" in update.detail
    assert "UPDATEURL" in update.hint


def test_an_update_url_with_no_repository_there_says_it_does_not_exist(
    practice: Practice, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-site"
    empty.mkdir()
    for served in serve(empty):
        practice.update_url = served.url + "/r4agent"
        results, _, _ = practice.doctor()
    assert "answered HTTP 404 (nothing at that URL)" in results["update repository"].detail


def test_an_update_server_that_never_answers_is_called_so(practice: Practice) -> None:
    with socket.socket() as silent:  # accepts (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        practice.update_url = f"http://127.0.0.1:{silent.getsockname()[1]}/r4agent"
        practice.timeout_s = 1
        results, _, _ = practice.doctor()
    detail = results["update repository"].detail
    assert "accepted the connection but sent no answer in time" in detail, detail


def test_metadata_signed_by_keys_this_agent_does_not_trust_fails_verification(
    practice: Practice, tmp_path: Path
) -> None:
    practice.trusted_root = make_repo(tmp_path / "another").repo.root_bytes()
    results, _, code = practice.doctor()
    update = results["update repository"]
    assert code == 1 and update.status is Status.FAIL
    assert "the metadata does not verify against the trusted root in" in update.detail
    assert "contact Flynotes support" in update.hint


def test_the_installed_update_url_file_wins_like_the_service_host_hands_it_over(
    practice: Practice, tmp_path: Path
) -> None:
    """The MSI's UPDATEURL lives in <data_dir>/update-url; the config's update_url is older."""
    good = practice.update_url
    practice.update_url = _closed_port_url("/stale")
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "update-url").write_text(good + "\n", encoding="utf-8")
    results, _, _ = practice.doctor()
    assert results["update repository"].status is Status.OK
    assert results["update repository"].detail.startswith(good)


def test_no_update_url_is_a_skip(practice: Practice) -> None:
    practice.update_url = ""
    results, _, code = practice.doctor()
    assert results["update repository"].status is Status.SKIP and code == 0


# -- the Windows service --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "status", "words"),
    [
        (ServiceState(False, "not installed"), Status.FAIL, "the R4Agent service is not installed"),
        (ServiceState(True, "stopped"), Status.FAIL, "R4Agent is installed but stopped"),
        (ServiceState(True, "running"), Status.OK, "R4Agent is installed and running"),
    ],
)
def test_the_windows_service_is_installed_and_running(
    practice: Practice, state: ServiceState, status: Status, words: str
) -> None:
    practice.service = state
    results, text, _ = practice.doctor()
    service = results["Windows service"]
    assert service.status is status and service.detail == words
    if status is Status.FAIL:
        assert "fix: " in text and ("MSI" in service.hint or "net start R4Agent" in service.hint)


def test_off_windows_the_service_check_is_skipped() -> None:
    doctor = Doctor(Path("/nonexistent/config.toml"), {})
    result = doctor.check_service()
    assert result.status is Status.SKIP and "not a Windows service host" in result.detail


# -- output --------------------------------------------------------------------------------
def test_json_output_lists_every_check(
    practice: Practice, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main

    practice.backend_url = _closed_port_url()
    code = main(["doctor", "--json", "--config", str(practice.write_config())])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["schema_version"] == 1 and doc["ok"] is False
    assert [c["name"] for c in doc["checks"]][:5] == [
        "config", "ODBC drivers", "R4 database", "R4 schema", "backend + licence"
    ]
    backend = next(c for c in doc["checks"] if c["name"] == "backend + licence")
    assert backend["status"] == "fail" and "refused" in backend["detail"] and backend["hint"]


def test_several_config_mistakes_are_each_on_a_line_of_their_own(practice: Practice) -> None:
    practice.extra = "[timing]\npoll_minutes = 'soon'\nlife_hours = 0"
    _, text, _ = practice.doctor()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("✗ config"))
    assert lines[start].endswith("2 problems:")
    assert "key 'timing.poll_minutes' must be a number" in lines[start + 1]
    assert "key 'timing.life_hours' must be greater than 0" in lines[start + 2]
    assert lines[start + 3].strip().startswith("fix: ")


def test_doctor_piped_into_head_ends_without_a_traceback_and_with_its_own_exit_code(
    practice: Practice,
) -> None:
    """`r4agent doctor | head -1`: the reader goes away after one line; the checks still run
    to the end and the exit code says what they found."""
    practice.backend_url = _closed_port_url()  # one failure: exit code 1
    child = subprocess.Popen(
        [sys.executable, "-m", "agent", "doctor", "--config", str(practice.write_config())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    child.stdout.close()  # what head does after its line
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=120) == 1, stderr
    assert first.startswith(b"r4agent ") and b"doctor:" in first
    assert stderr == "", stderr  # no traceback, no "Exception ignored ... BrokenPipeError"


# -- R4 as practices really have it: refused logins, the wrong database ---------------------------

D17 = "ODBC Driver 17 for SQL Server"


def _sql_server_config(practice: Practice, database_lines: str) -> Path:
    """The practice's config pointed at a SQL Server (no connection string)."""
    path = practice.write_config()
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace(f'connection_string = "{practice.connection_string}"\n', database_lines),
        encoding="utf-8",
    )
    return path


def _refusing(driver_error: tuple[str, str]) -> Callable[[DbSettings], R4Database]:
    """SQL Server's answer to the login, as open_database raises it (no stand-in can give it)."""

    def open_r4(settings: DbSettings) -> R4Database:
        attempt = connection_plan(settings, [D17], machine_names=())[0]
        target = describe_target(attempt.connection_string)
        raise translate_error(
            pyodbc.InterfaceError(*driver_error), target=target, action="connect", connecting=True
        )

    return open_r4


def _doctor_text(results: list[CheckResult]) -> str:
    out = io.StringIO()
    render(results, out)
    return out.getvalue()


def test_refused_windows_login_names_system_and_both_fixes(practice: Practice) -> None:
    path = _sql_server_config(practice, 'server = "."\n')
    results = Doctor(
        path, {}, list_drivers=lambda: [D17], open_r4=_refusing(SYSTEM_REFUSED), timeout_s=5
    ).run()
    database = {r.name: r for r in results}["R4 database"]
    assert database.status is Status.FAIL
    assert database.detail.startswith("SQL Server refused the login of NT AUTHORITY\\SYSTEM")
    assert "(18456)" in database.detail  # the driver's own words follow
    text = _doctor_text(results)
    assert "fix: either give NT AUTHORITY\\SYSTEM read access to sys2000" in text
    assert "SQLUSER=<login> SQLPASSWORD=<password>" in text
    assert _skipped_because({r.name: r for r in results}["R4 schema"], "R4 database")


def test_refused_sql_login_is_named_and_its_password_never_printed(practice: Practice) -> None:
    password = "Sekrit-Doctor-4471"
    path = _sql_server_config(
        practice, f'server = "."\nuser = "admin"\npassword = "{password}"\n'
    )
    seen: list[DbSettings] = []

    def open_r4(settings: DbSettings) -> R4Database:
        seen.append(settings)
        return _refusing(SQL_LOGIN_REFUSED)(settings)

    results = Doctor(path, {}, list_drivers=lambda: [D17], open_r4=open_r4, timeout_s=5).run()
    database = {r.name: r for r in results}["R4 database"]
    assert seen[0].user == "admin" and seen[0].password == password  # the login is used
    assert "refused the SQL login 'admin'" in database.detail
    assert "[database] user and password" in database.hint
    assert password not in _doctor_text(results)


def test_r4s_newer_schema_database_names_every_missing_table_and_suggests_sys2000(
    practice: Practice, tmp_path: Path
) -> None:
    # a database of another shape (GUID keys, other table names) where sys2000 should be
    path = tmp_path / "NG_R4_Sys2000.db"
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE Patient (PatientId VARCHAR(36) PRIMARY KEY, Forename VARCHAR(50));"
        "CREATE TABLE Appointment (AppointmentId VARCHAR(36) PRIMARY KEY, PatientId VARCHAR(36));"
    )
    con.close()
    practice.connection_string = sqlite_connection_string(path)
    results, text, code = practice.doctor()
    schema = results["R4 schema"]
    assert code == 1 and schema.status is Status.FAIL
    for table in REQUIRED_COLUMNS:
        assert f"missing table {table}" in schema.detail, text  # all of them, in one run
    assert "'NG_R4_Sys2000' is R4's newer schema" in schema.hint
    assert 'set [database] database = "sys2000"' in schema.hint


def test_the_training_database_is_a_warning_even_with_every_table(
    practice: Practice, make_r4_db: MakeR4Db
) -> None:
    practice.connection_string = make_r4_db(name="Tutor").connection_string
    results, text, code = practice.doctor()
    schema = results["R4 schema"]
    assert schema.status is Status.WARN and code == 0, text
    assert "'Tutor' is R4's training database" in schema.detail
    assert 'database = "sys2000"' in schema.hint and "fix:" in text
