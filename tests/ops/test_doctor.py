"""`r4agent doctor` against the real stand-ins: the Flynotes backend stand-in, moto's SQS
server, the R4 sample database through pyodbc + SQLite3, and the fake Rollbar endpoint.
One all-green run, then one test per broken thing, each checking the ✗, the hint and that
later checks that depend on it are skipped with the reason."""

from __future__ import annotations

import io
import socket
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
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
from tests.fixtures.driver_errors import SQL_LOGIN_REFUSED, SYSTEM_REFUSED
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.r4_database import MakeR4Db, R4SampleDb
from tests.fixtures.rollbar_endpoint import FakeRollbar

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

    def write_config(self) -> Path:
        path = self.tmp / "config.toml"
        data_dir = self.data_dir or self.tmp / "data"
        token = f'access_token = "{ROLLBAR_TOKEN}"\n' if self.rollbar_token else ""
        path.write_text(
            f"""
licence_key = "{TEST_LICENCE_KEY}"
backend_url = "{self.backend_url or self.backend.url}"
sqs_endpoint_url = "{self.sqs.endpoint_url}"
data_dir = "{data_dir}"
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
        doctor = Doctor(self.write_config(), {}, clock=FakeClock(datetime.now(UTC)), timeout_s=5)
        results = doctor.run()
        out = io.StringIO()
        render(results, out)
        return {r.name: r for r in results}, out.getvalue(), exit_code(results)


@pytest.fixture
def practice(
    tmp_path: Path,
    flynotes_standin: StandinBackend,
    sqs_server: SqsEndpoint,
    rollbar_endpoint: FakeRollbar,
    r4_sample_db: R4SampleDb,
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
        "data directory": Status.OK,
        "Rollbar": Status.OK,
    }, text
    assert text.count("✓") == 9 and "all checks passed" in text
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


def test_backend_unreachable(practice: Practice) -> None:
    practice.backend_url = _closed_port_url()
    results, _, code = practice.doctor()
    assert code == 1
    backend = results["backend + licence"]
    assert backend.status is Status.FAIL and "proxy" in backend.hint


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
