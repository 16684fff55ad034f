"""Config mistakes fail at start with the file, the key and what is expected — never a
traceback, never a secret's value."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import agent
from agent.config import (
    DEFAULT_ROLLBAR_ENDPOINT,
    ENV_VAR,
    AgentConfig,
    ConfigProblems,
    Secret,
    config_path,
    default_data_dir,
    load_config,
)
from agent.contract import IMPROVED, ORIGINAL, WireSettings
from agent.errors import ConfigError

LICENCE = "lic-7d1e0c55aa"
TOKEN = "rb0123456789abcdef0123456789abcd"
GOOD = f"""
licence_key = "{LICENCE}"
backend_url = "https://flynotes.example/api/"

[rollbar]
access_token = "{TOKEN}"
environment = "practice-test"
"""


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    message = str(caught.value)
    assert str(path) in message, message  # always names the file
    assert "Traceback" not in message
    assert LICENCE not in message and TOKEN not in message  # never echoes a secret
    return message


def test_a_good_file_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), {})
    assert isinstance(cfg, AgentConfig)
    assert cfg.licence_key.reveal() == LICENCE
    assert cfg.backend_url == "https://flynotes.example/api/"
    assert cfg.rollbar.access_token == Secret(TOKEN)
    assert cfg.rollbar.environment == "practice-test"
    assert cfg.rollbar.endpoint == DEFAULT_ROLLBAR_ENDPOINT
    assert cfg.data_dir == tmp_path  # defaults to the folder holding the config file
    assert (
        cfg.db.connection_string is None and cfg.db.server == "." and cfg.db.database == "sys2000"
    )
    assert cfg.sqs_endpoint_url is None and cfg.proxy is None
    assert (cfg.poll_minutes, cfg.life_hours, cfg.poll_hours) == (60.0, 24.0, 1.0)


def test_every_key_is_read(tmp_path: Path) -> None:
    (tmp_path / "licence.key").write_text(LICENCE + "\n", encoding="utf-8")
    cfg = load_config(
        write(
            tmp_path,
            f"""
licence_key_file = "licence.key"
backend_url = "http://127.0.0.1:8080/"
sqs_endpoint_url = "http://localhost:5000"
data_dir = "{tmp_path / "data"}"
proxy = "http://user:proxypass123@proxy.example:3128"
[database]
connection_string = "Driver={{SQLite3}};Database=/tmp/x.db;PWD=dbpass4567"
[rollbar]
access_token = "{TOKEN}"
endpoint = "http://127.0.0.1:9999/api/1/"
[timing]
poll_minutes = 0.5
life_hours = 0.01
""",
        ),
        {},
    )
    assert cfg.licence_key.reveal() == LICENCE  # trailing newline of the key file dropped
    assert cfg.backend_url == "http://127.0.0.1:8080/"
    assert cfg.sqs_endpoint_url == "http://localhost:5000"
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.db.connection_string is not None
    assert cfg.rollbar.endpoint == "http://127.0.0.1:9999/api/1/"
    assert (cfg.poll_minutes, cfg.life_hours) == (0.5, 0.01)
    assert set(cfg.secret_values()) == {LICENCE, TOKEN, "proxypass123", "dbpass4567"}


def test_secrets_are_masked_in_repr_str_and_formatting(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), {})
    for text in (repr(cfg), str(cfg), f"{cfg}", f"{cfg.licence_key}", repr(cfg.rollbar)):
        assert LICENCE not in text and TOKEN not in text
    assert "***" in repr(cfg.licence_key)


def test_missing_licence_key_names_both_ways_to_set_it(tmp_path: Path) -> None:
    message = error_for(tmp_path, 'backend_url = "https://flynotes.example/"\n')
    assert "'licence_key'" in message and "'licence_key_file'" in message
    assert "missing" in message


def test_missing_backend_url_is_required(tmp_path: Path) -> None:
    message = error_for(tmp_path, f'licence_key = "{LICENCE}"\n')
    assert "'backend_url'" in message and "missing" in message


def test_backend_url_without_scheme_says_so(tmp_path: Path) -> None:
    message = error_for(
        tmp_path, f'licence_key = "{LICENCE}"\nbackend_url = "flynotes.example/api"\n'
    )
    assert "key 'backend_url' must be an https:// URL" in message
    assert "without a scheme" in message


def test_plain_http_to_a_remote_backend_is_refused(tmp_path: Path) -> None:
    message = error_for(
        tmp_path, f'licence_key = "{LICENCE}"\nbackend_url = "http://flynotes.example/"\n'
    )
    assert "'backend_url'" in message and "non-loopback" in message


def test_wrong_type_names_key_and_type(tmp_path: Path) -> None:
    message = error_for(tmp_path, f'licence_key = "{LICENCE}"\nbackend_url = 42\n')
    assert "key 'backend_url' must be a string (got an integer)" in message


def test_wrong_type_in_a_table_names_the_dotted_key(tmp_path: Path) -> None:
    message = error_for(tmp_path, GOOD + '[timing]\npoll_minutes = "soon"\n')
    assert "key 'timing.poll_minutes' must be a number (got a string)" in message


def test_negative_timing_is_refused(tmp_path: Path) -> None:
    message = error_for(tmp_path, GOOD + "[timing]\nlife_hours = -1\n")
    assert "'timing.life_hours' must be greater than 0" in message


def test_table_given_as_a_value(tmp_path: Path) -> None:
    message = error_for(tmp_path, 'database = "sys2000"\n' + GOOD)
    assert "key 'database' must be a table" in message


def test_unknown_keys_are_named_typos_matter(tmp_path: Path) -> None:
    message = error_for(tmp_path, 'licence_kee = "x"\n' + GOOD + 'enviroment = "prod"\n')
    path = tmp_path / "config.toml"
    assert f"{path}:1: key 'licence_kee' is not a known key (did you mean 'licence_key'?)" in (
        message
    )
    assert f"{path}:9: key 'rollbar.enviroment' is not a known key (did you mean " in message
    assert "'rollbar.environment'?)" in message


def test_every_mistake_is_listed_in_one_run_with_its_line(tmp_path: Path) -> None:
    """A practice fixing its config one error per run would restart the service five times."""
    text = f"""licence_key = "{LICENCE}"
backend_url = "flynotes.example"
data_dir = "relative"
proxy_pasword = "x"

[timing]
poll_minutes = "soon"
long_poll_seconds = 0
"""
    path = tmp_path / "config.toml"
    with pytest.raises(ConfigProblems) as caught:
        load_config(write(tmp_path, text), {})
    problems = caught.value.problems
    assert [p.split(": key ")[0] for p in problems] == [
        f"{path}:4",  # unknown keys first
        f"{path}:2",
        f"{path}:3",
        f"{path}:7",
        f"{path}:8",
    ], problems
    assert "'proxy_pasword' is not a known key" in problems[0]
    assert "'backend_url' must be an https:// URL" in problems[1]
    assert "'data_dir' must be an absolute path" in problems[2]
    assert "'timing.poll_minutes' must be a number (got a string)" in problems[3]
    assert "'timing.long_poll_seconds' must be from 1 to 20 (got 0)" in problems[4]
    message = str(caught.value)
    assert message.startswith(f"{path}: 5 problems:\n  {path}:4: key 'proxy_pasword'")
    assert LICENCE not in message


def test_a_missing_key_is_listed_beside_the_bad_ones_without_a_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigProblems) as caught:
        load_config(write(tmp_path, "[timing]\nlife_hours = -1\n"), {})
    path = tmp_path / "config.toml"
    assert caught.value.problems == (
        f"{path}: key 'licence_key' is missing; set 'licence_key' or 'licence_key_file' "
        "(a file holding it)",
        f"{path}: key 'backend_url' is missing; set it to the Flynotes backend's https:// URL "
        "given with your licence",
        f"{path}:2: key 'timing.life_hours' must be greater than 0 (got -1)",
    )


def test_a_windows_path_in_double_quotes_gets_the_single_quote_hint(tmp_path: Path) -> None:
    """The commonest Windows mistake: a backslash path in a "..." string."""
    line = 'data_dir = "C:\\Program Files\\x"\n'
    message = error_for(tmp_path, GOOD.replace("[rollbar]", line + "[rollbar]"))
    assert f"{tmp_path / 'config.toml'}:5: not valid TOML: Unescaped '\\' in a string" in message
    assert "write Windows paths and server names in single quotes" in message
    assert "'C:\\ProgramData\\R4'" in message
    message = error_for(tmp_path, GOOD + '[database]\nserver = "R4SERVER\\R4"\n')
    assert ":9: not valid TOML" in message and "single quotes" in message


def test_a_path_whose_backslashes_became_escapes_is_caught_too(tmp_path: Path) -> None:
    """ "C:\\temp\\new" is valid TOML: a tab and a line break, and no error from tomllib."""
    message = error_for(tmp_path, 'data_dir = "C:\\temp\\new"\n' + GOOD)
    assert f"{tmp_path / 'config.toml'}:1: key 'data_dir' holds a tab, line break" in message
    assert "single quotes" in message
    cfg = load_config(write(tmp_path, "data_dir = '/srv/r4'\n" + GOOD), {})
    assert cfg.data_dir == Path("/srv/r4")


def test_unquoted_text_gets_the_quotes_hint(tmp_path: Path) -> None:
    message = error_for(tmp_path, GOOD + "environment = staging\n")
    assert ":8: not valid TOML: Invalid value" in message and "need quotes" in message


def test_both_licence_key_and_key_file_is_ambiguous(tmp_path: Path) -> None:
    (tmp_path / "licence.key").write_text(LICENCE, encoding="utf-8")
    message = error_for(tmp_path, 'licence_key_file = "licence.key"\n' + GOOD)
    assert "'licence_key' and 'licence_key_file' are both set" in message


def test_both_rollbar_token_and_token_file_is_ambiguous(tmp_path: Path) -> None:
    message = error_for(tmp_path, GOOD + 'access_token_file = "token.txt"\n')
    assert "'rollbar.access_token' and 'rollbar.access_token_file' are both set" in message


def test_missing_key_file_names_key_and_path(tmp_path: Path) -> None:
    message = error_for(
        tmp_path,
        'licence_key_file = "nowhere.key"\nbackend_url = "https://flynotes.example/"\n',
    )
    assert "key 'licence_key_file' names a file that does not exist" in message
    assert str(tmp_path / "nowhere.key") in message


UNREADABLE_KEY_CONFIG = 'licence_key_file = "licence.key"\nbackend_url = "https://flynotes.example/"\n'
AS_NOBODY = ("--reuid=nobody", "--regid=nogroup", "--clear-groups")
LOAD_AND_PRINT = """
import sys
from agent.config import load_config
from agent.errors import ConfigError
try:
    load_config(__import__("pathlib").Path(sys.argv[1]), {})
except ConfigError as e:
    print(e)
    raise SystemExit(78)
print("loaded")
"""


@pytest.mark.skipif(os.name != "posix", reason="needs POSIX permissions")
def test_unreadable_key_file_says_check_permissions(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        message = _load_as_nobody_with_a_key_file_only_root_may_read()
    else:
        key = tmp_path / "licence.key"
        key.write_text(LICENCE, encoding="utf-8")
        key.chmod(0)
        try:
            message = error_for(tmp_path, UNREADABLE_KEY_CONFIG)
        finally:
            key.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert "'licence_key_file'" in message and "may not read" in message, message
    assert "check its permissions" in message and LICENCE not in message


def _load_as_nobody_with_a_key_file_only_root_may_read() -> str:
    """Root reads every file, so the agent's config code runs in a child process as `nobody`
    (setpriv, util-linux): the config is world-readable, the key file root's alone. The folder
    is outside pytest's (root-only) temporary directory, with a copy of the agent package the
    child can read wherever the repository was cloned."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's read-everything right")
    with tempfile.TemporaryDirectory(prefix="r4agent-perm-") as folder:
        root = Path(folder)
        root.chmod(0o755)
        shutil.copytree(
            Path(agent.__file__).parent, root / "src" / "agent",
            ignore=shutil.ignore_patterns("__pycache__"),
        )  # fmt: skip
        for path in (root / "src").rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (root / "src").chmod(0o755)
        config = write(root, UNREADABLE_KEY_CONFIG)
        config.chmod(0o644)
        key = root / "licence.key"
        key.write_text(LICENCE, encoding="utf-8")
        key.chmod(0o600)
        result = subprocess.run(
            [setpriv, *AS_NOBODY, sys.executable, "-B", "-s", "-c", LOAD_AND_PRINT, str(config)],
            cwd=root,
            env={"PYTHONPATH": str(root / "src"), "PATH": os.environ.get("PATH", "")},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 78, result.stdout + result.stderr
    assert str(config) in result.stdout  # names the config file
    return result.stdout

def test_key_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "licence.key").mkdir()
    message = error_for(
        tmp_path, 'licence_key_file = "licence.key"\nbackend_url = "https://flynotes.example/"\n'
    )
    assert "'licence_key_file' names a file that cannot be read" in message


def test_licence_key_with_a_slash_is_refused(tmp_path: Path) -> None:
    message = error_for(
        tmp_path, 'licence_key = "abc/def/ghi"\nbackend_url = "https://flynotes.example/"\n'
    )
    assert "key 'licence_key' must hold a licence key without '/'" in message
    assert "abc/def" not in message


def test_empty_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "licence.key").write_text("\n", encoding="utf-8")
    message = error_for(
        tmp_path, 'licence_key_file = "licence.key"\nbackend_url = "https://flynotes.example/"\n'
    )
    assert "'licence_key_file' names an empty file" in message


def test_bad_toml_syntax_gives_the_line_number(tmp_path: Path) -> None:
    message = error_for(tmp_path, GOOD + "\n[timing\npoll_minutes = 5\n")
    assert "not valid TOML" in message and "line 9" in message


def test_bad_toml_near_a_secret_does_not_echo_it(tmp_path: Path) -> None:
    message = error_for(tmp_path, f'licence_key = "{LICENCE}\nbackend_url = "https://x/"\n')
    assert "line 1" in message


def test_connection_string_and_server_together_are_ambiguous(tmp_path: Path) -> None:
    message = error_for(
        tmp_path, GOOD + '[database]\nconnection_string = "DSN=r4"\nserver = "R4SERVER"\n'
    )
    assert "'database.connection_string' replaces" in message


def test_bad_rollbar_endpoint_and_proxy(tmp_path: Path) -> None:
    message = error_for(tmp_path, GOOD + 'endpoint = "ftp://rollbar.example/"\n')
    assert "key 'rollbar.endpoint' must be an https:// URL" in message
    message = error_for(tmp_path, 'proxy = "proxy.example:3128"\n' + GOOD)
    assert "key 'proxy' must be a URL" in message


def test_relative_data_dir_is_refused(tmp_path: Path) -> None:
    message = error_for(tmp_path, 'data_dir = "data"\n' + GOOD)
    assert "key 'data_dir' must be an absolute path" in message


def test_missing_file_names_the_path_and_how_it_was_chosen(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="config file not found") as caught:
        load_config(None, {ENV_VAR: str(path)})
    assert str(path) in str(caught.value) and ENV_VAR in str(caught.value)


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'licence_key = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, {})


def test_where_the_config_is_looked_for(tmp_path: Path) -> None:
    explicit = tmp_path / "a.toml"
    assert config_path(explicit, {ENV_VAR: "/elsewhere.toml"}) == explicit
    assert config_path(None, {ENV_VAR: "/elsewhere.toml"}) == Path("/elsewhere.toml")
    assert config_path(None, {}) == Path("/var/lib/r4agent/config.toml") or os.name == "nt"
    windows = default_data_dir({"ProgramData": "D:\\PD"}, platform="win32")
    assert windows.parts[-2:] == ("Flynotes", "R4Agent")


def test_update_url_is_read_and_validated_like_other_urls(tmp_path: Path) -> None:
    base = f'licence_key = "{LICENCE}"\nbackend_url = "https://flynotes.example/"\n'
    cfg = load_config(write(tmp_path, base + 'update_url = "https://updates.example/r4/"\n'), {})
    assert cfg.update_url == "https://updates.example/r4/"
    message = error_for(tmp_path, base + 'update_url = "http://updates.example/r4/"\n')
    assert "'update_url'" in message and "non-loopback" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "must be from 1 to 20 (got 0)"),  # 0 would be a short poll: a hot loop
        ("21", "must be from 1 to 20 (got 21)"),  # SQS refuses a longer wait
        ("1.5", "must be a whole number (got a number)"),
        ('"5"', "must be a whole number (got a string)"),
    ],
)
def test_long_poll_seconds_must_be_a_whole_number_of_seconds_sqs_accepts(
    tmp_path: Path, value: str, expected: str
) -> None:
    message = error_for(tmp_path, GOOD + f"[timing]\nlong_poll_seconds = {value}\n")
    assert f"key 'timing.long_poll_seconds' {expected}" in message


def test_compressed_timing_for_tests_and_demos_is_read(tmp_path: Path) -> None:
    text = GOOD + "[timing]\npoll_minutes = 0.05\nlife_hours = 0.003\nlong_poll_seconds = 1\n"
    cfg = load_config(write(tmp_path, text), {})
    assert (cfg.poll_minutes, cfg.life_hours, cfg.long_poll_seconds) == (0.05, 0.003, 1)


SQL_PASSWORD = "Sql pass;w0rd}"  # a space, a ';' and a '}': all legal in a SQL login's password


def test_a_sql_login_is_read_and_its_password_registered_as_a_secret(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            GOOD.replace(
                "[rollbar]",
                f'[database]\nserver = ".\\\\R4"\nuser = "r4reader"\n'
                f'password = "{SQL_PASSWORD}"\n\n[rollbar]',
            ),
        ),
        {},
    )
    assert cfg.db.user == "r4reader" and cfg.db.password == Secret(SQL_PASSWORD)
    assert cfg.db.encrypt is None  # the driver's default, with the local TLS fallback
    # masked in logs and Rollbar payloads, also in its connection-string form ('}' doubled)
    assert {SQL_PASSWORD, SQL_PASSWORD.replace("}", "}}")} <= set(cfg.secret_values())
    for text in (repr(cfg), str(cfg), repr(cfg.db)):
        assert SQL_PASSWORD not in text


def test_windows_authentication_stays_the_default(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), {})
    assert cfg.db.user is None and cfg.db.password is None


def test_the_sql_password_may_come_from_a_file_readable_only_by_the_service(
    tmp_path: Path,
) -> None:
    (tmp_path / "sql.password").write_text(SQL_PASSWORD + "\r\n", encoding="utf-8")
    cfg = load_config(
        write(
            tmp_path,
            GOOD + '\n[database]\nuser = "r4reader"\npassword_file = "sql.password"\n',
        ),
        {},
    )
    assert cfg.db.password == Secret(SQL_PASSWORD)


@pytest.mark.parametrize(
    ("database", "expected"),
    [
        ('user = "r4reader"\n', "'database.user' needs 'database.password'"),
        (f'password = "{SQL_PASSWORD}"\n', "'database.user' is missing"),
        (
            f'user = "r"\npassword = "{SQL_PASSWORD}"\npassword_file = "p"\n',
            "'database.password' and 'database.password_file' are both set",
        ),
        (
            f'user = "r"\npassword = "{SQL_PASSWORD}"\n'
            'connection_string = "Driver={x};Server=.;Trusted_Connection=yes"\n',
            "names its own login",
        ),
        ('encrypt = "no"\n', "'database.encrypt' must be true or false (got a string)"),
        (
            'encrypt = false\nconnection_string = "Driver={x};Server=."\n',
            "put Encrypt=yes/no in 'database.connection_string'",
        ),
        ('user = "r"\npassword = "two\\nlines"\n', "'database.password' holds a tab, line break"),
    ],
)
def test_sql_login_mistakes_name_the_key_and_never_the_password(
    tmp_path: Path, database: str, expected: str
) -> None:
    message = error_for(tmp_path, GOOD + "\n[database]\n" + database)
    assert expected in message
    assert SQL_PASSWORD not in message and "two" not in message


def test_encrypt_false_is_read_for_a_remote_server(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, GOOD + '\n[database]\nserver = "r4host"\nencrypt = false\n'), {}
    )
    assert cfg.db.encrypt is False


def test_contract_and_uploads_default_to_the_original_agents_behaviour(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), {})
    assert cfg.wire == WireSettings() == ORIGINAL
    assert cfg.rows_per_request == 500


def test_contract_improvements_and_rows_per_request_are_read(tmp_path: Path) -> None:
    text = GOOD + (
        '[contract]\ntimes = "utc"\nunknown_dob = "missing"\nblank_text = "missing"\n'
        'typed_answers = "send"\n[uploads]\nrows_per_request = 5000\n'
    )
    cfg = load_config(write(tmp_path, text), {})
    assert cfg.wire == IMPROVED
    assert cfg.rows_per_request == 5000


def test_bad_contract_and_uploads_values_are_all_listed_with_key_file_and_line(
    tmp_path: Path,
) -> None:
    text = GOOD + (
        '[contract]\ntimes = "local"\nunknown_dob = 1\nblank_text = "missing"\n'
        "[uploads]\nrows_per_request = 5001\n"
    )
    message = error_for(tmp_path, text)
    path = tmp_path / "config.toml"
    assert f"{path}:9: key 'contract.times' must be 'wall-clock' or 'utc' (got 'local')" in message
    assert (
        f"{path}:10: key 'contract.unknown_dob' must be 'as-r4' or 'missing' (got an integer)"
        in message
    )
    assert f"{path}:13: key 'uploads.rows_per_request' must be from 1 to 5000 (got 5001)" in message
    assert "rows_per_request = 0" not in message
    assert "0" in error_for(tmp_path, GOOD + "[uploads]\nrows_per_request = 0\n")
    assert (
        "'uploads.row_per_request' is not a known key (did you mean 'uploads.rows_per_request'?)"
        in (error_for(tmp_path, GOOD + "[uploads]\nrow_per_request = 10\n"))
    )
