"""The real data path: the R4 stand-in database through pyodbc + the SQLite3 ODBC driver, the
R4 reader, the client, loopback HTTP, the backend stand-in. Expected bodies are computed from
the raw SQLite tables with the contract's stated rules: an oracle of stdlib sqlite3 and plain
Python, independent of the reader, of agent.contract and of zoneinfo (UK clock changes are
worked out from the statutory rule below). Each test runs twice: with the default (the
original agent's values) and with every `[contract]` improvement on (what this agent sent
before issue 10; the oracle's rules for it are unchanged)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agent import contract
from agent.contract import Wire
from agent.flynotes.client import FlynotesClient
from agent.r4.connection import open_database
from agent.r4.reader import R4Reader
from agent.reporting import NullSink
from agent.standin.backend import StandinBackend
from agent.uploads.passes import PassSummary, Uploads
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY
from tests.fixtures.r4_database import MakeR4Db, R4SampleDb

CANARY_CODE = 900001


def _clean(value: object) -> str:
    return "" if value is None else str(value).strip()


def _clean_or_null(value: object) -> str | None:
    return _clean(value) or None


def _two_am_on_last_sunday(year: int, month: int) -> datetime:
    last = datetime(year, month, 31, 2)  # March and October both have 31 days
    return last - timedelta(days=(last.weekday() + 1) % 7)


def _uk_local_to_utc(text: str | None) -> str:
    """R4's naive UK wall-clock time -> ISO UTC with Z. UK rule: BST (UTC+1) from 01:00 UTC on
    the last Sunday of March to 01:00 UTC on the last Sunday of October, i.e. from 02:00 to
    02:00 on the wall clock; the repeated 01:00-02:00 hour in October is read as its first (BST)
    occurrence, the skipped March hour as GMT."""
    if text is None:
        return ""
    local = datetime.fromisoformat(text)
    bst = _two_am_on_last_sunday(local.year, 3) <= local < _two_am_on_last_sunday(local.year, 10)
    utc = local - timedelta(hours=1) if bst else local
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def _wall_clock(text: str | None) -> str:
    """The original's time: R4's wall clock labelled UTC, with milliseconds."""
    if text is None:
        return ""
    local = datetime.fromisoformat(text)
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}Z"


def _time(text: str | None, original: bool) -> str:
    return _wall_clock(text) if original else _uk_local_to_utc(text)


def _text_or_null(value: object, original: bool) -> str | None:
    """JSON text: the original sends NULL as null and blank as ""; the improvement, null."""
    if not original:
        return _clean_or_null(value)
    return None if value is None else str(value).strip()


WIRES = pytest.mark.parametrize(
    "wire", [contract.ORIGINAL, contract.IMPROVED], ids=["original", "improved"]
)


def _rows(db_path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(str(db_path))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _raw_patients(db_path: Path) -> list[tuple[Any, ...]]:
    return _rows(
        db_path,
        "SELECT p.patientCode, p.surname, p.forename, p.dob, p.mobileNo, p.email, "
        "a.address1, a.address2, a.address3, a.address4, a.address5, a.postcode "
        "FROM patients p LEFT JOIN addresses a ON a.addressId = p.addressId",
    )


def _expected_patient_rows(db_path: Path, original: bool) -> dict[str, dict[str, str]]:
    """As the stand-in reads the CSV: every value a string ("" for NULL and for blank)."""
    expected: dict[str, dict[str, str]] = {}
    for row in _raw_patients(db_path):
        code, surname, forename, dob, mobile, email, a1, a2, a3, a4, a5, postcode = row
        day = _clean(dob)[:10]
        expected[str(code)] = {
            "id": str(code),
            "familyName": _clean(surname),
            "givenName": _clean(forename),
            "dateOfBirth": "" if day == "1900-01-01" and not original else day,
            "mobileNumber": _clean(mobile),
            "emailAddress": _clean(email),
            "addressLine1": _clean(a1),
            "addressLine2": _clean(a2),
            "city": ", ".join(p for p in (_clean(a3), _clean(a4)) if p),
            "county": _clean(a5),
            "postcode": _clean(postcode),
            "country": "UK",
        }
    return expected


def _expected_patient_json(db_path: Path, original: bool) -> dict[str, dict[str, str | None]]:
    """The patient object of patient-sync: strings or null, as the original typed them."""
    expected: dict[str, dict[str, str | None]] = {}
    for row in _raw_patients(db_path):
        code, surname, forename, dob, mobile, email, a1, a2, a3, a4, a5, postcode = row
        day = _clean(dob)[:10] or None
        city3, city4 = _text_or_null(a3, original), _text_or_null(a4, original)
        expected[str(code)] = {
            "id": str(code),
            "familyName": _text_or_null(surname, original),
            "givenName": _text_or_null(forename, original),
            "dateOfBirth": None if day == "1900-01-01" and not original else day,
            "mobileNumber": _clean_or_null(mobile),  # blank -> null in both
            "emailAddress": _clean_or_null(email),
            "addressLine1": _text_or_null(a1, original),
            "addressLine2": _text_or_null(a2, original),
            "city": f"{city3}, {city4}" if city3 and city4 else city3 or city4,  # JS `a3 || a4`
            "county": _text_or_null(a5, original),
            "postcode": _text_or_null(postcode, original),
            "country": "UK",
        }
    return expected


@dataclass
class _Seen:
    """What the compared questionnaires contain, so the test proves it covered the nasty cases."""

    answer_kinds: set[str]
    null_answer_id: int = 0
    padded_notes: int = 0
    non_ascii: int = 0
    none: int = 0
    chosen_from_several: int = 0


def _typed_answer(text: object, number: object, day: object, money: object) -> tuple[str, object]:
    """The first typed answer (R4 has one column per type) as the contract writes it: numbers
    exactly without exponent or trailing zeros, money with at least two decimals (as SQL Server
    prints money), dates as their date part."""
    if text is not None:
        return "text", text
    if number is not None:
        return "number", _plain_number(number)
    if day is not None:
        return "date", str(day)[:10]
    if money is not None:
        whole, _, cents = _plain_number(money).partition(".")
        return "currency", f"{whole}.{cents:0<2}"
    return "blank", None


def _plain_number(value: object) -> str:
    text = f"{Decimal(str(value)):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _expected_questionnaires(
    db_path: Path, seen: _Seen, original: bool
) -> dict[str, dict[str, Any] | None]:
    """Per patient code: the highest-qaireid questionnaire as the contract's JSON, or None."""
    questions = dict(_rows(db_path, "SELECT QuestionID, [Text] FROM Question"))
    presets = dict(_rows(db_path, "SELECT AnswerId, [Text] FROM QuestionMultiAnswer"))
    heads: dict[int, list[tuple[int, str | None, str | None]]] = {}
    for qaire_id, code, when, notes in _rows(
        db_path, "SELECT qaireid, patientCode, [datetime], notes FROM CompletedQuestionnaire"
    ):
        heads.setdefault(code, []).append((qaire_id, when, notes))
    answers: dict[int, list[tuple[Any, ...]]] = {}
    for row in _rows(
        db_path,
        "SELECT qaireid, QuestionId, AnswerId, Notes, TextAnswer, NumberAnswer, DateAnswer, "
        "CurrencyAnswer FROM CompletedQuestionnaireAnswer",
    ):
        answers.setdefault(row[0], []).append(row[1:])

    expected: dict[str, dict[str, Any] | None] = {}
    for (code,) in _rows(db_path, "SELECT patientCode FROM patients"):
        if code not in heads:
            expected[str(code)] = None
            seen.none += 1
            continue
        qaire_id, when, notes = max(heads[code])  # highest qaireid, whatever its date
        seen.chosen_from_several += len(heads[code]) > 1
        responses = []
        # the reader orders by QuestionId, then AnswerId (SQLite sorts NULL first)
        for question_id, answer_id, answer_notes, *typed in sorted(
            answers.get(qaire_id, []), key=lambda r: (r[0], r[1] is not None, r[1] or 0)
        ):
            if answer_id is not None and answer_id in presets:
                kind, answer = "preset", presets[answer_id]
            else:
                kind, answer = _typed_answer(*typed)
                if original:  # the original sent the pre-set text only (typed_answers)
                    answer = None
            seen.answer_kinds.add(kind)
            seen.null_answer_id += answer_id is None
            responses.append(
                {
                    "questionText": _text_or_null(questions.get(question_id), original),
                    "answerText": _text_or_null(answer, original),
                    "answerNotes": _text_or_null(answer_notes, original),
                }
            )
        for text in [notes, *(r[2] for r in answers.get(qaire_id, []))]:
            seen.padded_notes += text is not None and text.strip() != text and bool(text.strip())
        body = {
            "submissionTime": _time(when, original) or None,
            "notes": _text_or_null(notes, original),
            "responses": responses,
        }
        seen.non_ascii += not str(body).isascii()
        expected[str(code)] = body
    return expected


# Rows added to a private copy of the sample: clock-change edges (2026: BST from 29 March,
# to 25 October) and a questionnaire whose highest id is not its latest date.
EDGE_TIMES = {
    "2026-03-29 00:59:59": "2026-03-29T00:59:59Z",  # last GMT second
    "2026-03-29 01:30:00": "2026-03-29T01:30:00Z",  # skipped hour: read as GMT
    "2026-03-29 02:00:00": "2026-03-29T01:00:00Z",  # first BST wall-clock time
    "2026-10-25 00:59:59": "2026-10-24T23:59:59Z",  # BST, the day before in UTC
    "2026-10-25 01:30:00": "2026-10-25T00:30:00Z",  # repeated hour: its first (BST) occurrence
    "2026-10-25 02:00:00": "2026-10-25T02:00:00Z",  # GMT again
    "2026-12-31 23:59:59": "2026-12-31T23:59:59Z",
    "2026-07-01 00:30:00": "2026-06-30T23:30:00Z",
}
EDGE_CODE = 950000


def _add_edge_rows(db_path: Path) -> None:
    con = sqlite3.connect(str(db_path))
    try:
        next_qaire = con.execute("SELECT MAX(qaireid) FROM CompletedQuestionnaire").fetchone()[0]
        next_appt = con.execute("SELECT MAX(ApptId) FROM Appts").fetchone()[0]
        for n, when in enumerate(EDGE_TIMES, start=1):
            code = EDGE_CODE + n
            con.execute(
                "INSERT INTO patients (patientCode, forename, surname) VALUES (?, ?, ?)",
                (code, "Ffion", "ap Rhys"),
            )
            con.execute(
                "INSERT INTO CompletedQuestionnaire VALUES (?, ?, ?, ?, 1)",
                (next_qaire + n, code, when, f"  edge {n}  "),
            )
            con.execute(
                "INSERT INTO CompletedQuestionnaireAnswer VALUES (?, 13, NULL, NULL, NULL, ?, "
                "NULL, NULL)",
                (next_qaire + n, 61.5),
            )
            con.execute("INSERT INTO Appts VALUES (?, ?, ?, 1, 15)", (next_appt + n, code, when))
        # highest qaireid, older date: the agent sends this one (R4's "latest" is by id)
        code = EDGE_CODE + len(EDGE_TIMES) + 1
        con.execute("INSERT INTO patients (patientCode) VALUES (?)", (code,))
        con.executemany(
            "INSERT INTO CompletedQuestionnaire VALUES (?, ?, ?, ?, 1)",
            [
                (next_qaire + 100, code, "2025-05-01 10:00:00", "newer date"),
                (next_qaire + 101, code, "2020-05-01 10:00:00", "highest id"),
            ],
        )
        con.commit()
    finally:
        con.close()


@pytest.fixture
def edge_db(make_r4_db: MakeR4Db) -> R4SampleDb:
    db = make_r4_db()
    _add_edge_rows(db.path)
    return db


@pytest.fixture
def reader(r4_sample_db: R4SampleDb) -> Iterator[R4Reader]:
    with open_database(r4_sample_db.settings) as db:
        yield R4Reader(db)


def test_oracle_reads_the_uk_clock_changes_as_the_contract_states() -> None:
    for local, utc in EDGE_TIMES.items():
        assert _uk_local_to_utc(local) == utc, local
    assert _uk_local_to_utc("2025-03-30 02:00:00") == "2025-03-30T01:00:00Z"
    assert _uk_local_to_utc("2025-10-26 01:59:59") == "2025-10-26T00:59:59Z"
    assert _uk_local_to_utc("2025-10-26 02:00:00") == "2025-10-26T02:00:00Z"


def _full_pass(
    client: FlynotesClient, reader: R4Reader, table: str, wire: contract.WireSettings
) -> PassSummary:
    summary = Uploads(client, errors=NullSink(), wire=Wire(wire)).run(table, reader, full=True)
    assert summary.error is None
    return summary


@WIRES
def test_full_patient_upload_from_r4_matches_the_database_field_by_field(
    edge_db: R4SampleDb, flynotes_standin: StandinBackend, wire: contract.WireSettings
) -> None:
    original = wire == contract.ORIGINAL
    with (
        open_database(edge_db.settings) as db,
        FlynotesClient(flynotes_standin.url, TEST_LICENCE_KEY, wire=Wire(wire)) as client,
    ):
        summary = _full_pass(client, R4Reader(db), "patients", wire)
    requests = flynotes_standin.received_for("patient-upload")
    assert all(r.rows is not None and 0 < len(r.rows) <= 500 for r in requests)
    received = {row["id"]: row for r in requests for row in r.rows or []}
    everyone = _expected_patient_rows(edge_db.path, original)
    expected = {c: r for c, r in everyone.items() if r["familyName"] and r["givenName"]}
    assert summary.sent == len(received) == len(expected)
    assert summary.skipped == len(everyone) - len(expected) > 0  # no surname / forename
    assert str(EDGE_CODE + len(EDGE_TIMES) + 1) not in received  # that one has no names
    for code, row in expected.items():
        assert received[code] == row, f"patient {code} differs"
    # The sample is nasty enough for this test to mean something:
    rows = list(expected.values())
    assert any(r["addressLine1"] == "" and r["postcode"] == "" for r in rows)  # no address
    assert any(not (r["familyName"] + r["givenName"]).isascii() for r in rows)  # accents
    assert any(r["dateOfBirth"] == ("1900-01-01" if original else "") for r in rows)
    assert any(r["mobileNumber"] == "" for r in rows) and any(r["emailAddress"] == "" for r in rows)
    assert any(", " in r["city"] for r in rows)


@WIRES
def test_patient_sync_of_every_patient_matches_the_database_field_by_field(
    edge_db: R4SampleDb, flynotes_standin: StandinBackend, wire: contract.WireSettings
) -> None:
    original = wire == contract.ORIGINAL
    with (
        open_database(edge_db.settings) as db,
        FlynotesClient(flynotes_standin.url, TEST_LICENCE_KEY, wire=Wire(wire)) as client,
    ):
        reader = R4Reader(db)
        for patient in reader.iter_patients():
            questionnaire = reader.latest_questionnaire(patient.code)
            client.sync_patient(patient, questionnaire, f"patch-{patient.code}")
    received = {
        r.json["patientPatchId"]: r.json for r in flynotes_standin.received_for("patient-sync")
    }
    patients = _expected_patient_json(edge_db.path, original)
    seen = _Seen(answer_kinds=set())
    questionnaires = _expected_questionnaires(edge_db.path, seen, original)
    assert len(received) == len(patients) == len(questionnaires)
    for code, row in patients.items():
        body = received[f"patch-{code}"]
        assert body["patient"] == row, f"patient {code}"
        assert body["questionnaire"] == questionnaires[code], f"questionnaire of {code}"

    # the edges are pinned by value, not only by the oracle
    for n, (local, utc) in enumerate(EDGE_TIMES.items(), start=1):
        edge = received[f"patch-{EDGE_CODE + n}"]["questionnaire"]
        assert edge["submissionTime"] == (local.replace(" ", "T") + ".000Z" if original else utc)
        assert edge["notes"] == f"edge {n}"
        assert edge["responses"] == [  # a number answer: sent with typed_answers = "send"
            {"questionText": "Weight (kg)", "answerText": None if original else "61.5",
             "answerNotes": None}
        ]
    by_id = received[f"patch-{EDGE_CODE + len(EDGE_TIMES) + 1}"]["questionnaire"]
    assert by_id["notes"] == "highest id"
    assert by_id["submissionTime"] == (
        "2020-05-01T10:00:00.000Z" if original else "2020-05-01T09:00:00Z"
    )
    canary = received[f"patch-{CANARY_CODE}"]
    assert canary["patient"]["familyName"] == "CANARYSURNAME"
    assert canary["questionnaire"]["notes"] == "CANARYNOTES"
    typed_texts = [r["answerText"] for r in canary["questionnaire"]["responses"]]
    assert ("CANARYTEXTANSWER" in typed_texts) is not original

    # and the sample covered what the contract has to get right
    assert {"preset", "text", "number", "date", "currency", "blank"} <= seen.answer_kinds
    assert seen.null_answer_id and seen.padded_notes and seen.non_ascii
    assert seen.none and seen.chosen_from_several


@WIRES
def test_appointments_and_statuses_from_r4_match_the_database_field_by_field(
    edge_db: R4SampleDb, flynotes_standin: StandinBackend, wire: contract.WireSettings
) -> None:
    original = wire == contract.ORIGINAL
    with (
        open_database(edge_db.settings) as db,
        FlynotesClient(flynotes_standin.url, TEST_LICENCE_KEY, wire=Wire(wire)) as client,
    ):
        reader = R4Reader(db)
        sent_appts = _full_pass(client, reader, "appointments", wire).sent
        sent_flags = _full_pass(client, reader, "appointment statuses", wire).sent
    flags = {
        str(flag): {
            "apptFlag": str(flag),
            "cancelled": "true" if cancelled else "false",
            "character": _clean(character),
            "description": _clean(description),
        }
        for flag, description, character, cancelled in _rows(
            edge_db.path, "SELECT ApptFlag, Description, [Character], Cancelled FROM ApptFlags"
        )
    }
    appts = {
        str(appt_id): {
            "apptId": str(appt_id),
            "patientCode": str(code),
            "apptDateTime": _time(when, original),
            "statusCode": "" if flag is None else str(flag),
            "status": flags[str(flag)]["description"] if str(flag) in flags else "",
        }
        for appt_id, code, when, flag in _rows(
            edge_db.path, "SELECT ApptId, PatientCode, ApptDateTime, ApptFlag FROM Appts"
        )
    }
    appt_requests = flynotes_standin.received_for("appointment-upload")
    (flag_request,) = flynotes_standin.received_for("appointment-status-upload")
    assert len(appt_requests) == -(-len(appts) // 500)  # 500 rows per POST
    rows = [row for r in appt_requests for row in r.rows or []]
    assert flag_request.rows is not None
    assert sent_appts == len(appts) == len(rows)
    assert sent_flags == len(flags) == len(flag_request.rows)
    assert {r["apptId"]: r for r in rows} == appts
    assert {r["apptFlag"]: r for r in flag_request.rows} == flags

    edges = {r["patientCode"]: r["apptDateTime"] for r in rows}
    for n, (local, utc) in enumerate(EDGE_TIMES.items(), start=1):
        assert edges[str(EDGE_CODE + n)] == (_wall_clock(local) if original else utc)
    assert any(r["statusCode"] and not r["status"] for r in rows)  # flag ApptFlags lacks
    months = {r["apptDateTime"][5:7] for r in rows}
    assert {"01", "07"} <= months  # both GMT and BST appointments from the sample itself
    assert {r["cancelled"] for r in flag_request.rows} == {"true", "false"}
