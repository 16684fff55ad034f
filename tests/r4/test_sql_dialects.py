"""The exact SQL text of every statement, in both dialects.

SQL Server 2008 has no OFFSET/FETCH and no STRING_AGG; a changed statement must be a conscious,
reviewed change to these strings (and re-checked against SQL Server 2008 syntax).
"""

from __future__ import annotations

import pytest

from agent.r4 import sql
from agent.r4.guard import check_select_only

PATIENT_COLUMNS = (
    "p.patientCode, p.forename, p.surname, p.dob, p.mobileNo, p.email, "
    "a.address1, a.address2, a.address3, a.address4, a.address5, a.postcode"
)

EXPECTED: dict[str, dict[str, str]] = {
    "mssql": {
        "ping": "SELECT 1",
        "patients_first_page": (
            f"SELECT TOP 2000 {PATIENT_COLUMNS} FROM dbo.patients p "
            "LEFT JOIN dbo.addresses a ON a.addressId = p.addressId ORDER BY p.patientCode"
        ),
        "patients_next_page": (
            f"SELECT TOP 2000 {PATIENT_COLUMNS} FROM dbo.patients p "
            "LEFT JOIN dbo.addresses a ON a.addressId = p.addressId "
            "WHERE p.patientCode > ? ORDER BY p.patientCode"
        ),
        "patient_codes_first_page": (
            "SELECT TOP 2000 p.patientCode FROM dbo.patients p ORDER BY p.patientCode"
        ),
        "patient_codes_next_page": (
            "SELECT TOP 2000 p.patientCode FROM dbo.patients p "
            "WHERE p.patientCode > ? ORDER BY p.patientCode"
        ),
        "patient_by_code": (
            f"SELECT {PATIENT_COLUMNS} FROM dbo.patients p "
            "LEFT JOIN dbo.addresses a ON a.addressId = p.addressId WHERE p.patientCode = ?"
        ),
        "latest_questionnaire": (
            "SELECT TOP 1 q.qaireid, q.patientCode, q.[datetime], q.notes "
            "FROM dbo.CompletedQuestionnaire q WHERE q.patientCode = ? ORDER BY q.qaireid DESC"
        ),
        "questionnaire_answers": (
            "SELECT qu.[Text], m.[Text], a.TextAnswer, a.NumberAnswer, a.DateAnswer, "
            "a.CurrencyAnswer, a.Notes "
            "FROM dbo.CompletedQuestionnaireAnswer a "
            "LEFT JOIN dbo.Question qu ON qu.QuestionID = a.QuestionId "
            "LEFT JOIN dbo.QuestionMultiAnswer m ON m.AnswerId = a.AnswerId "
            "WHERE a.qaireid = ? ORDER BY a.QuestionId, a.AnswerId"
        ),
        "appointments_first_page": (
            "SELECT TOP 500 ap.ApptId, ap.PatientCode, ap.ApptDateTime, ap.ApptFlag, "
            "f.Description FROM dbo.Appts ap "
            "LEFT JOIN dbo.ApptFlags f ON f.ApptFlag = ap.ApptFlag ORDER BY ap.ApptId"
        ),
        "appointments_next_page": (
            "SELECT TOP 500 ap.ApptId, ap.PatientCode, ap.ApptDateTime, ap.ApptFlag, "
            "f.Description FROM dbo.Appts ap "
            "LEFT JOIN dbo.ApptFlags f ON f.ApptFlag = ap.ApptFlag "
            "WHERE ap.ApptId > ? ORDER BY ap.ApptId"
        ),
        "appointment_ids_first_page": (
            "SELECT TOP 500 ap.ApptId FROM dbo.Appts ap ORDER BY ap.ApptId"
        ),
        "appointment_ids_next_page": (
            "SELECT TOP 500 ap.ApptId FROM dbo.Appts ap WHERE ap.ApptId > ? ORDER BY ap.ApptId"
        ),
        "appointment_flags": (
            "SELECT f.ApptFlag, f.Description, f.[Character], f.Cancelled "
            "FROM dbo.ApptFlags f ORDER BY f.ApptFlag"
        ),
        "question_counts": (
            "SELECT qu.[Text], COALESCE(c.n, 0) FROM dbo.Question qu "
            "LEFT JOIN (SELECT QuestionId, COUNT(*) AS n FROM dbo.CompletedQuestionnaireAnswer "
            "GROUP BY QuestionId) c ON c.QuestionId = qu.QuestionID ORDER BY qu.QuestionID"
        ),
        "preset_answer_counts": (
            "SELECT m.[Text], COALESCE(c.n, 0) FROM dbo.QuestionMultiAnswer m "
            "LEFT JOIN (SELECT AnswerId, COUNT(*) AS n FROM dbo.CompletedQuestionnaireAnswer "
            "WHERE AnswerId IS NOT NULL GROUP BY AnswerId) c ON c.AnswerId = m.AnswerId "
            "ORDER BY m.AnswerId"
        ),
        "schema_columns": (
            "SELECT TABLE_NAME, COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS "
            "WHERE TABLE_SCHEMA = 'dbo'"
        ),
    },
    "sqlite": {
        "ping": "SELECT 1",
        "patients_first_page": (
            f"SELECT {PATIENT_COLUMNS} FROM patients p "
            "LEFT JOIN addresses a ON a.addressId = p.addressId "
            "ORDER BY p.patientCode LIMIT 2000"
        ),
        "patients_next_page": (
            f"SELECT {PATIENT_COLUMNS} FROM patients p "
            "LEFT JOIN addresses a ON a.addressId = p.addressId "
            "WHERE p.patientCode > ? ORDER BY p.patientCode LIMIT 2000"
        ),
        "patient_codes_first_page": (
            "SELECT p.patientCode FROM patients p ORDER BY p.patientCode LIMIT 2000"
        ),
        "patient_codes_next_page": (
            "SELECT p.patientCode FROM patients p "
            "WHERE p.patientCode > ? ORDER BY p.patientCode LIMIT 2000"
        ),
        "patient_by_code": (
            f"SELECT {PATIENT_COLUMNS} FROM patients p "
            "LEFT JOIN addresses a ON a.addressId = p.addressId WHERE p.patientCode = ?"
        ),
        "latest_questionnaire": (
            "SELECT q.qaireid, q.patientCode, q.[datetime], q.notes "
            "FROM CompletedQuestionnaire q WHERE q.patientCode = ? "
            "ORDER BY q.qaireid DESC LIMIT 1"
        ),
        "questionnaire_answers": (
            "SELECT qu.[Text], m.[Text], a.TextAnswer, a.NumberAnswer, a.DateAnswer, "
            "a.CurrencyAnswer, a.Notes "
            "FROM CompletedQuestionnaireAnswer a "
            "LEFT JOIN Question qu ON qu.QuestionID = a.QuestionId "
            "LEFT JOIN QuestionMultiAnswer m ON m.AnswerId = a.AnswerId "
            "WHERE a.qaireid = ? ORDER BY a.QuestionId, a.AnswerId"
        ),
        "appointments_first_page": (
            "SELECT ap.ApptId, ap.PatientCode, ap.ApptDateTime, ap.ApptFlag, "
            "f.Description FROM Appts ap "
            "LEFT JOIN ApptFlags f ON f.ApptFlag = ap.ApptFlag ORDER BY ap.ApptId LIMIT 500"
        ),
        "appointments_next_page": (
            "SELECT ap.ApptId, ap.PatientCode, ap.ApptDateTime, ap.ApptFlag, "
            "f.Description FROM Appts ap "
            "LEFT JOIN ApptFlags f ON f.ApptFlag = ap.ApptFlag "
            "WHERE ap.ApptId > ? ORDER BY ap.ApptId LIMIT 500"
        ),
        "appointment_ids_first_page": "SELECT ap.ApptId FROM Appts ap ORDER BY ap.ApptId LIMIT 500",
        "appointment_ids_next_page": (
            "SELECT ap.ApptId FROM Appts ap WHERE ap.ApptId > ? ORDER BY ap.ApptId LIMIT 500"
        ),
        "appointment_flags": (
            "SELECT f.ApptFlag, f.Description, f.[Character], f.Cancelled "
            "FROM ApptFlags f ORDER BY f.ApptFlag"
        ),
        "question_counts": (
            "SELECT qu.[Text], COALESCE(c.n, 0) FROM Question qu "
            "LEFT JOIN (SELECT QuestionId, COUNT(*) AS n FROM CompletedQuestionnaireAnswer "
            "GROUP BY QuestionId) c ON c.QuestionId = qu.QuestionID ORDER BY qu.QuestionID"
        ),
        "preset_answer_counts": (
            "SELECT m.[Text], COALESCE(c.n, 0) FROM QuestionMultiAnswer m "
            "LEFT JOIN (SELECT AnswerId, COUNT(*) AS n FROM CompletedQuestionnaireAnswer "
            "WHERE AnswerId IS NOT NULL GROUP BY AnswerId) c ON c.AnswerId = m.AnswerId "
            "ORDER BY m.AnswerId"
        ),
        "schema_columns": (
            "SELECT m.name, c.name FROM sqlite_master m JOIN pragma_table_info(m.name) c "
            "WHERE m.type IN ('table', 'view')"
        ),
    },
}


def all_statements(d: sql.Dialect) -> list[sql.Statement]:
    return [
        sql.ping(d),
        sql.patients_page(d, 2000, first=True),
        sql.patients_page(d, 2000, first=False),
        sql.patient_codes_page(d, 2000, first=True),
        sql.patient_codes_page(d, 2000, first=False),
        sql.patient_by_code(d),
        sql.latest_questionnaire(d),
        sql.questionnaire_answers(d),
        sql.appointments_page(d, 500, first=True),
        sql.appointments_page(d, 500, first=False),
        sql.appointment_ids_page(d, 500, first=True),
        sql.appointment_ids_page(d, 500, first=False),
        sql.appointment_flags(d),
        sql.question_counts(d),
        sql.preset_answer_counts(d),
        sql.schema_columns(d),
    ]


@pytest.mark.parametrize("dialect", [sql.MSSQL, sql.SQLITE], ids=lambda d: d.name)
def test_every_statement_has_the_reviewed_text(dialect: sql.Dialect) -> None:
    actual = {st.name: st.text for st in all_statements(dialect)}
    assert actual == EXPECTED[dialect.name]


@pytest.mark.parametrize("dialect", [sql.MSSQL, sql.SQLITE], ids=lambda d: d.name)
def test_every_statement_passes_the_select_only_guard(dialect: sql.Dialect) -> None:
    for st in all_statements(dialect):
        check_select_only(st.text)


def test_sql_server_2008_text_uses_no_later_or_non_portable_syntax() -> None:
    for st in all_statements(sql.MSSQL):
        upper = st.text.upper()
        for later in ("OFFSET", "FETCH", "STRING_AGG", "ISNULL(", "LIMIT", "IIF(", "FORMAT("):
            assert later not in upper, (st.name, later)
        # CONVERT(varchar, float) keeps 6 significant digits: numbers travel as numbers
        assert "CONVERT(" not in upper and "CAST(" not in upper, st.name


def test_page_size_that_is_not_a_positive_int_is_refused_before_reaching_sql_text() -> None:
    for bad in (0, -1, True, "10; DROP TABLE patients", 2.5):
        with pytest.raises(ValueError):
            sql.patients_page(sql.MSSQL, bad, first=True)  # type: ignore[arg-type]


def test_dialects_differ_only_in_the_dialect_table() -> None:
    # Removing the dialect-specific fragments from both variants leaves the same statement.
    for ms, lite in zip(all_statements(sql.MSSQL), all_statements(sql.SQLITE), strict=True):
        if ms.name == "schema_columns":
            continue
        normalised_ms = (
            ms.text.replace("dbo.", "")
            .replace("TOP 2000 ", "")
            .replace("TOP 500 ", "")
            .replace("TOP 1 ", "")
        )
        normalised_lite = (
            lite.text.replace(" LIMIT 2000", "").replace(" LIMIT 500", "").replace(" LIMIT 1", "")
        )
        assert normalised_ms == normalised_lite, ms.name
