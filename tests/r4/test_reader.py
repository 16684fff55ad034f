"""R4Reader over the real stack (pyodbc + unixODBC + SQLite3 ODBC driver) on R4-shaped data."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import pytest

from agent.ports import RecordSource
from agent.r4.connection import R4Database, open_database
from agent.r4.reader import DEFAULT_PAGE_SIZE, R4Reader
from agent.r4.skipped_rows import UnconvertibleValue
from agent.r4.sql import Statement
from agent.records import Answer
from agent.standin.r4_sample import CANARY, CANARY_CODE, CANARY_DOB, UNKNOWN_FLAGS
from tests.fixtures.r4_database import MakeR4Db, R4SampleDb


@pytest.fixture
def sample_db(r4_sample_db: R4SampleDb) -> Iterator[R4Database]:
    with open_database(r4_sample_db.settings) as db:
        yield db


def _rows(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def _write(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Test set-up writes with sqlite3; the product under test reads through pyodbc only."""
    con = sqlite3.connect(path)
    try:
        for sql, params in statements:
            con.execute(sql, params)
        con.commit()
    finally:
        con.close()


def test_reader_is_a_record_source(sample_db: R4Database) -> None:
    reader: RecordSource = R4Reader(sample_db)
    reader.ping()
    assert DEFAULT_PAGE_SIZE == 2000


def test_patients_stream_page_by_page_and_never_all_at_once(
    sample_db: R4Database, r4_sample_db: R4SampleDb
) -> None:
    pages: list[Statement] = []
    sample_db.observers.append(pages.append)
    stream = R4Reader(sample_db, page_size=50).iter_patients()
    first = next(stream)
    assert [p.name for p in pages] == ["patients_first_page"]  # one page read, not all rows
    rest = list(stream)
    codes = [first.code, *(p.code for p in rest)]
    total = len(_rows(r4_sample_db.path, "SELECT patientCode FROM patients"))
    assert total == 301  # 300 + the canary
    assert codes == sorted(codes) and len(set(codes)) == total
    assert [p.name for p in pages] == ["patients_first_page"] + ["patients_next_page"] * 6
    assert all("LIMIT 50" in p.text for p in pages)


def test_page_boundary_exactly_at_the_end_ends_with_an_empty_page(make_r4_db: MakeR4Db) -> None:
    sample = make_r4_db(patients=40, canary=False)
    with open_database(sample.settings) as db:
        pages: list[Statement] = []
        db.observers.append(pages.append)
        assert len(list(R4Reader(db, page_size=20).iter_patients())) == 40
    assert len(pages) == 3


def test_patients_without_an_address_are_returned(
    sample_db: R4Database, r4_sample_db: R4SampleDb
) -> None:
    no_address = {
        int(str(code))
        for (code,) in _rows(
            r4_sample_db.path,
            "SELECT p.patientCode FROM patients p LEFT JOIN addresses a "
            "ON a.addressId = p.addressId WHERE a.addressId IS NULL",
        )
    }
    null_id = _rows(r4_sample_db.path, "SELECT COUNT(*) FROM patients WHERE addressId IS NULL")
    assert null_id[0][0] and len(no_address) > int(str(null_id[0][0]))  # NULL and dangling ids
    patients = {p.code: p for p in R4Reader(sample_db, page_size=64).iter_patients()}
    assert no_address <= patients.keys()
    for code in no_address:
        p = patients[code]
        assert (p.address1, p.address2, p.address3, p.address4, p.address5, p.postcode) == (
            (None,) * 6
        )


def test_accented_and_apostrophe_names_round_trip(make_r4_db: MakeR4Db) -> None:
    sample = make_r4_db()
    _write(
        sample.path,
        ("INSERT INTO addresses VALUES (?, ?, ?, ?, ?, ?, ?)",
         (777001, "Tŷ'r Ysgol", "Heol Glyndŵr", "Llanfair", "Ynys Môn", "Gwynedd", "LL61 5UJ")),
        ("INSERT INTO patients VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
         (777001, "Siân", "O'Brien", "1980-02-29 00:00:00", None, None, 777001, None, None)),
        ("INSERT INTO patients VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
         (777002, "Zoë", "Nuñez", "1900-01-01 00:00:00", "", "zoë@example.com", None, None, None)),
        ("INSERT INTO patients VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
         (777003, "Siobhán", "Ní Bhriain", None, None, None, 999999999, None, None)),
    )  # fmt: skip
    with open_database(sample.settings) as db:
        reader = R4Reader(db)
        sian = reader.get_patient(777001)
        zoe = reader.get_patient(777002)
        siobhan = reader.get_patient(777003)
        streamed = {p.code: p for p in reader.iter_patients() if p.code in (777001, 777002)}
    assert sian is not None and zoe is not None and siobhan is not None
    assert (sian.forename, sian.surname, sian.dob) == ("Siân", "O'Brien", date(1980, 2, 29))
    assert (sian.address1, sian.address2, sian.address4) == (
        "Tŷ'r Ysgol",
        "Heol Glyndŵr",
        "Ynys Môn",
    )
    assert (zoe.forename, zoe.surname, zoe.email, zoe.mobile) == (
        "Zoë",
        "Nuñez",
        "zoë@example.com",
        "",
    )
    assert zoe.dob == date(1900, 1, 1)  # R4's "unknown" is kept as is; mapping decides
    assert (siobhan.forename, siobhan.surname, siobhan.dob, siobhan.postcode) == (
        "Siobhán", "Ní Bhriain", None, None,
    )  # fmt: skip
    assert streamed == {777001: sian, 777002: zoe}


def test_sample_names_survive_the_odbc_round_trip(
    sample_db: R4Database, r4_sample_db: R4SampleDb
) -> None:
    direct = {
        int(str(r[0])): (r[1], r[2])
        for r in _rows(r4_sample_db.path, "SELECT patientCode, forename, surname FROM patients")
    }
    via_odbc = {p.code: (p.forename, p.surname) for p in R4Reader(sample_db).iter_patients()}
    assert via_odbc == direct
    names = {n for pair in direct.values() for n in pair}
    assert {"Siân", "Zoë", "O'Brien", "Nuñez"} <= names


def test_canary_patient_is_read_field_by_field(sample_db: R4Database) -> None:
    reader = R4Reader(sample_db)
    canary = reader.get_patient(CANARY_CODE)
    assert canary is not None
    assert (canary.forename, canary.surname, canary.email, canary.mobile) == (
        CANARY["forename"], CANARY["surname"], CANARY["email"], CANARY["mobile"],
    )  # fmt: skip
    assert (canary.address1, canary.postcode, canary.dob) == (
        CANARY["address1"], CANARY["postcode"], CANARY_DOB,
    )  # fmt: skip
    questionnaire = reader.latest_questionnaire(CANARY_CODE)
    assert questionnaire is not None and questionnaire.notes == CANARY["notes"]
    assert (
        Answer(
            question_text="Do you have any allergies (e.g. penicillin, latex)?",
            answer_text=CANARY["text_answer"],
            notes=None,
            typed=True,
        )
        in questionnaire.answers
    )


def test_unknown_patient_and_patient_without_questionnaire_give_none(
    sample_db: R4Database, r4_sample_db: R4SampleDb
) -> None:
    reader = R4Reader(sample_db)
    assert reader.get_patient(123456789) is None
    without = _rows(
        r4_sample_db.path,
        "SELECT patientCode FROM patients WHERE patientCode NOT IN "
        "(SELECT patientCode FROM CompletedQuestionnaire) LIMIT 1",
    )
    assert without, "the sample must hold patients with no questionnaire"
    assert reader.latest_questionnaire(int(str(without[0][0]))) is None


def test_latest_questionnaire_is_the_highest_qaireid_not_the_newest_date(
    make_r4_db: MakeR4Db,
) -> None:
    sample = make_r4_db()
    many = _rows(
        sample.path,
        "SELECT patientCode, MAX(qaireid) FROM CompletedQuestionnaire "
        "GROUP BY patientCode HAVING COUNT(*) >= 3 LIMIT 1",
    )
    assert many, "the sample must hold patients with many questionnaires"
    code = int(str(many[0][0]))
    # a higher qaireid whose datetime is OLDER than the others: still the latest by R4's rule
    _write(
        sample.path,
        ("INSERT INTO CompletedQuestionnaire VALUES (?, ?, ?, ?, ?)",
         (5_000_000, code, "2001-01-01 08:00:00", "older date, highest id", 1)),
        ("INSERT INTO CompletedQuestionnaireAnswer VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
         (5_000_000, 2, None, "see GP", "Cnau (nuts) – anaphylaxis", None, None, None)),
        ("INSERT INTO CompletedQuestionnaireAnswer VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
         (5_000_000, 1, 2, None, "ignored: the preset wins", None, None, None)),
        ("INSERT INTO CompletedQuestionnaireAnswer VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
         (5_000_000, 13, None, None, None, 72.5, None, None)),
        ("INSERT INTO CompletedQuestionnaireAnswer VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
         (5_000_000, 12, None, None, None, None, "2023-11-05 00:00:00", None)),
        ("INSERT INTO CompletedQuestionnaireAnswer VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
         (5_000_000, 14, None, None, None, None, None, "12.50")),
        ("INSERT INTO CompletedQuestionnaireAnswer VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
         (5_000_000, 3, None, None, None, None, None, None)),
        ("INSERT INTO CompletedQuestionnaireAnswer VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
         (5_000_000, 999, None, None, "answer to a deleted question", None, None, None)),
    )  # fmt: skip
    with open_database(sample.settings) as db:
        latest = R4Reader(db).latest_questionnaire(code)
    assert latest is not None
    assert (latest.qaire_id, latest.patient_code) == (5_000_000, code)
    assert latest.completed_at == datetime(2001, 1, 1, 8, 0)
    assert latest.notes == "older date, highest id"
    assert latest.answers == (
        Answer("Are you currently taking any medication?", "No", None),  # preset AnswerId 2
        Answer(
            "Do you have any allergies (e.g. penicillin, latex)?",
            "Cnau (nuts) – anaphylaxis",
            "see GP",
            typed=True,  # no pre-set answer: sent only with typed_answers = "send"
        ),
        Answer("Are you pregnant or breastfeeding?", None, None),  # left blank
        Answer("Date of your last dental visit", "2023-11-05", None, typed=True),
        Answer("Weight (kg)", "72.5", None, typed=True),
        Answer("Amount paid today (£)", "12.50", None, typed=True),  # money: 2 decimals at least
        Answer("", "answer to a deleted question", None, typed=True),
    )


def test_text_answers_with_null_answer_id_use_text_answer(
    sample_db: R4Database, r4_sample_db: R4SampleDb
) -> None:
    typed = _rows(
        r4_sample_db.path,
        "SELECT q.patientCode, a.TextAnswer FROM CompletedQuestionnaireAnswer a "
        "JOIN CompletedQuestionnaire q ON q.qaireid = a.qaireid "
        "WHERE a.AnswerId IS NULL AND a.TextAnswer IS NOT NULL AND q.qaireid = "
        "(SELECT MAX(qaireid) FROM CompletedQuestionnaire WHERE patientCode = q.patientCode) "
        "LIMIT 5",
    )
    assert typed
    reader = R4Reader(sample_db)
    for code, text in typed:
        latest = reader.latest_questionnaire(int(str(code)))
        assert latest is not None
        assert text in {a.answer_text for a in latest.answers}


def test_unknown_appointment_flags_give_no_status(
    sample_db: R4Database, r4_sample_db: R4SampleDb
) -> None:
    pages: list[Statement] = []
    sample_db.observers.append(pages.append)
    appointments = list(R4Reader(sample_db, page_size=100).iter_appointments())
    total = _rows(r4_sample_db.path, "SELECT COUNT(*) FROM Appts")[0][0]
    assert len(appointments) == total and len(pages) > 1
    unknown = [a for a in appointments if a.flag in UNKNOWN_FLAGS]
    known = [a for a in appointments if a.flag not in UNKNOWN_FLAGS]
    assert unknown and all(a.status is None for a in unknown)
    assert known and all(a.status for a in known)
    canary_appt = next(a for a in appointments if a.patient_code == CANARY_CODE)
    assert (canary_appt.starts_at, canary_appt.flag, canary_appt.status) == (
        datetime(2026, 2, 3, 14, 0), 0, "Booked",
    )  # fmt: skip


def test_appointment_flags_are_read_with_their_cancelled_bit(sample_db: R4Database) -> None:
    flags = list(R4Reader(sample_db).iter_appointment_flags())
    assert [f.flag for f in flags] == list(range(8))
    assert {f.flag for f in flags if f.cancelled} == {4, 5, 7}
    assert flags[0].description == "Booked" and flags[0].character == "B"


def test_counts_name_questions_and_presets_but_never_typed_answers(
    sample_db: R4Database, r4_sample_db: R4SampleDb
) -> None:
    reader = R4Reader(sample_db)
    questions = reader.question_counts()
    answers_total = _rows(r4_sample_db.path, "SELECT COUNT(*) FROM CompletedQuestionnaireAnswer")
    assert sum(q.answer_count for q in questions) == answers_total[0][0]
    presets = reader.preset_answer_counts()
    chosen = _rows(
        r4_sample_db.path, "SELECT COUNT(*) FROM CompletedQuestionnaireAnswer WHERE AnswerId > 0"
    )
    assert sum(p.count for p in presets) == chosen[0][0]
    texts = {q.question_text for q in questions} | {p.answer_text for p in presets}
    assert CANARY["text_answer"] not in texts and CANARY["notes"] not in texts
    assert "Yes" in {p.answer_text for p in presets}


@pytest.mark.parametrize(
    ("number", "currency", "expected"),
    [
        (1234567.891, None, "1234567.891"),  # CONVERT(varchar, float) gave "1.23457e+006"
        (80.0, None, "80"),
        (0.000125, None, "0.000125"),
        (1e16, None, "10000000000000000"),
        (-3.5, None, "-3.5"),
        (None, "12.3456", "12.3456"),  # money has 4 decimals; style 0 rounded to 2
        (None, "1234567.1", "1234567.10"),
        (None, "7", "7.00"),
    ],
)  # fmt: skip
def test_number_and_currency_answers_keep_every_digit(
    make_r4_db: MakeR4Db, number: float | None, currency: str | None, expected: str
) -> None:
    sample = make_r4_db()
    code = int(str(_rows(sample.path, "SELECT MIN(patientCode) FROM patients")[0][0]))
    _write(
        sample.path,
        ("INSERT INTO CompletedQuestionnaire VALUES (?, ?, ?, ?, ?)",
         (6_000_000, code, "2024-01-01 08:00:00", None, 1)),
        ("INSERT INTO CompletedQuestionnaireAnswer VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
         (6_000_000, 13, None, None, None, number, None, currency)),
    )  # fmt: skip
    with open_database(sample.settings) as db:
        latest = R4Reader(db).latest_questionnaire(code)
    assert latest is not None and [a.answer_text for a in latest.answers] == [expected]


def test_counts_are_per_distinct_text_when_questions_and_presets_share_one(
    make_r4_db: MakeR4Db,
) -> None:
    # Real R4 forms repeat texts: every yes/no question has its own "Yes" pre-set answer.
    sample = make_r4_db()
    yes_id = _rows(sample.path, "SELECT AnswerId FROM QuestionMultiAnswer WHERE [Text] = 'Yes'")
    question = _rows(sample.path, "SELECT QuestionID, [Text] FROM Question ORDER BY 1 LIMIT 1")
    (first_yes,), (first_q, first_q_text) = yes_id[0], question[0]
    _write(
        sample.path,
        ("INSERT INTO QuestionMultiAnswer VALUES (?, ?)", (9001, "Yes")),
        ("INSERT INTO QuestionMultiAnswer VALUES (?, ?)", (9002, "Yes")),
        ("INSERT INTO Question VALUES (?, ?)", (9001, first_q_text)),
        ("INSERT INTO CompletedQuestionnaireAnswer VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
         (1, 9001, 9001, None, None, None, None, None)),
        ("INSERT INTO CompletedQuestionnaireAnswer VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
         (1, 9001, 9002, None, None, None, None, None)),
        ("INSERT INTO CompletedQuestionnaireAnswer VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
         (2, 9001, 9002, None, None, None, None, None)),
    )  # fmt: skip
    chosen = {
        int(str(answer)): int(str(n))
        for answer, n in _rows(
            sample.path,
            "SELECT AnswerId, COUNT(*) FROM CompletedQuestionnaireAnswer GROUP BY AnswerId",
        )
        if answer is not None
    }
    answered = {
        int(str(q)): int(str(n))
        for q, n in _rows(
            sample.path,
            "SELECT QuestionId, COUNT(*) FROM CompletedQuestionnaireAnswer GROUP BY QuestionId",
        )
    }
    with open_database(sample.settings) as db:
        reader = R4Reader(db)
        presets = reader.preset_answer_counts()
        questions = reader.question_counts()
    preset_texts = [p.answer_text for p in presets]
    assert len(preset_texts) == len(set(preset_texts))  # "unique" means unique by text
    yes = next(p for p in presets if p.answer_text == "Yes")
    assert yes.count == chosen[int(str(first_yes))] + 3
    question_texts = [q.question_text for q in questions]
    assert len(question_texts) == len(set(question_texts))
    shared = next(q for q in questions if q.question_text == first_q_text)
    assert shared.answer_count == answered.get(int(str(first_q)), 0) + 3
    assert question_texts[0] == first_q_text  # first-seen (question id) order is kept


def test_bulk_read_checks_every_value_when_a_column_comes_back_as_another_type(
    make_r4_db: MakeR4Db,
) -> None:
    # Pages are converted column by column, trusting a column whose values all have the
    # expected type; a view that hands codes and dates back as text must still give the same
    # records, and a value that is no date must fail naming the column, not the value.
    sample = make_r4_db()
    with open_database(sample.settings) as db:
        expected = list(R4Reader(db).iter_patients())
    _write(
        sample.path,
        ("ALTER TABLE patients RENAME TO patients_raw", ()),
        ("CREATE VIEW patients AS SELECT CAST(patientCode AS TEXT) AS patientCode, forename, "
         "surname, CAST(dob AS TEXT) AS dob, mobileNo, email, addressId FROM patients_raw", ()),
    )  # fmt: skip
    with open_database(sample.settings) as db:
        as_text = list(R4Reader(db, page_size=len(expected) + 1).iter_patients())
        assert sorted(as_text, key=lambda p: p.code) == expected
        _write(sample.path, ("UPDATE patients_raw SET dob = ? WHERE patientCode = ?",
                             (f"{CANARY['surname']} 1971", CANARY_CODE)))  # fmt: skip
        with pytest.raises(UnconvertibleValue) as failed:
            R4Reader(db).get_patient(CANARY_CODE)
        # a bulk pass skips that row instead: tests/r4/test_unconvertible_rows.py
    assert "dob" in str(failed.value) and CANARY["surname"] not in str(failed.value)
