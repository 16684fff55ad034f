"""Every SQL statement the agent sends to R4, in one place.

Written for SQL Server 2008 (R4's database `sys2000`): keyset paging with
`SELECT TOP n ... WHERE key > ? ORDER BY key` (no OFFSET/FETCH), no STRING_AGG, COALESCE rather
than ISNULL. The SQLite stand-in needs a few differences, and ONLY those live in `Dialect`:
TOP vs LIMIT, the `dbo.` schema prefix, how to list the schema, and how varchar bytes are
decoded. Numbers and dates are fetched as they are and turned into text by the reader
(SQL Server's CONVERT(varchar, float) keeps 6 significant digits). Each builder is a pure
function `(dialect, ...) -> Statement`; the tests pin the exact text of both dialects.

Column positions are part of each statement's contract: the reader unpacks rows by position
(documented on each builder) so that drivers that rename expression columns do not matter.
Identifiers that are also SQL words (`datetime`, `Text`, `Character`, `state`) are bracketed,
which both SQL Server and SQLite accept.
"""

# S608: this module IS the place where SQL text is assembled, from constants only: table names
# from literals, row counts checked to be ints. Values always travel as `?` parameters.
# ruff: noqa: S608

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between R4's SQL Server and the SQLite stand-in. Nothing else may differ."""

    name: str
    schema_prefix: str  # "dbo." on SQL Server
    top_template: str  # inserted after SELECT; "{n}" is the row count
    limit_template: str  # appended after ORDER BY; "{n}" is the row count
    schema_columns_sql: str  # rows of (table name, column name) for every table
    char_encoding: str  # how varchar (SQL_CHAR) bytes are decoded

    def table(self, name: str) -> str:
        return f"{self.schema_prefix}{name}"

    def top(self, n: int) -> str:
        return self.top_template.format(n=_positive(n))

    def limit(self, n: int) -> str:
        return self.limit_template.format(n=_positive(n))


MSSQL = Dialect(
    name="mssql",
    schema_prefix="dbo.",
    top_template="TOP {n} ",
    limit_template="",
    schema_columns_sql=(
        "SELECT TABLE_NAME, COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = 'dbo'"
    ),
    # Windows-1252 with every byte defined, as SQL Server decodes it (agent/r4/cp1252.py)
    char_encoding="r4-cp1252",
)

SQLITE = Dialect(
    name="sqlite",
    schema_prefix="",
    top_template="",
    limit_template=" LIMIT {n}",
    schema_columns_sql=(
        "SELECT m.name, c.name FROM sqlite_master m JOIN pragma_table_info(m.name) c "
        "WHERE m.type IN ('table', 'view')"
    ),
    char_encoding="utf-8",
)

DIALECTS: dict[str, Dialect] = {d.name: d for d in (MSSQL, SQLITE)}


@dataclass(frozen=True, slots=True)
class Statement:
    """A named SELECT. The name (never the parameters) appears in errors and logs."""

    name: str
    text: str


def _positive(n: int) -> int:
    # Page sizes are formatted into the text (TOP (?) is not portable to LIMIT); only ints pass.
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError("row count must be a positive int")
    return n


# --- what the agent needs from R4: tables and the columns it reads --------------------------

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": ("patientCode", "forename", "surname", "dob", "mobileNo", "email", "addressId"),
    "addresses": (
        "addressId",
        "address1",
        "address2",
        "address3",
        "address4",
        "address5",
        "postcode",
    ),
    "CompletedQuestionnaire": ("qaireid", "patientCode", "datetime", "notes"),
    "CompletedQuestionnaireAnswer": (
        "qaireid",
        "QuestionId",
        "AnswerId",
        "Notes",
        "TextAnswer",
        "NumberAnswer",
        "DateAnswer",
        "CurrencyAnswer",
    ),
    "Question": ("QuestionID", "Text"),
    "QuestionMultiAnswer": ("AnswerId", "Text"),
    "Appts": ("ApptId", "PatientCode", "ApptDateTime", "ApptFlag"),
    "ApptFlags": ("ApptFlag", "Description", "Character", "Cancelled"),
}


# --- statements ----------------------------------------------------------------------------

_PATIENT_COLUMNS = (
    "p.patientCode, p.forename, p.surname, p.dob, p.mobileNo, p.email, "
    "a.address1, a.address2, a.address3, a.address4, a.address5, a.postcode"
)


def _patients_from(d: Dialect) -> str:
    # LEFT JOIN: a patient without an address (NULL or dangling addressId) is still a patient.
    return (
        f"FROM {d.table('patients')} p "
        f"LEFT JOIN {d.table('addresses')} a ON a.addressId = p.addressId"
    )


def ping(d: Dialect) -> Statement:
    return Statement("ping", "SELECT 1")


def patients_page(d: Dialect, page_size: int, *, first: bool) -> Statement:
    """One keyset page of patients ordered by patientCode.

    Parameters: none when `first`, else (last patientCode of the previous page,).
    Row: code, forename, surname, dob, mobileNo, email, address1..address5, postcode.
    """
    where = "" if first else "WHERE p.patientCode > ? "
    return Statement(
        "patients_first_page" if first else "patients_next_page",
        f"SELECT {d.top(page_size)}{_PATIENT_COLUMNS} {_patients_from(d)} "
        f"{where}ORDER BY p.patientCode{d.limit(page_size)}",
    )


def patient_codes_page(d: Dialect, page_size: int, *, first: bool) -> Statement:
    """The keys of the `patients_page` with the same parameters, alone: read when that page
    holds a text the driver cannot decode, to name the rows left out (codes are ints).

    Parameters: as `patients_page`. Row: patientCode.
    """
    where = "" if first else "WHERE p.patientCode > ? "
    return Statement(
        "patient_codes_first_page" if first else "patient_codes_next_page",
        f"SELECT {d.top(page_size)}p.patientCode FROM {d.table('patients')} p "
        f"{where}ORDER BY p.patientCode{d.limit(page_size)}",
    )


def patient_by_code(d: Dialect) -> Statement:
    """Parameters: (patientCode,). Row: as `patients_page`."""
    return Statement(
        "patient_by_code",
        f"SELECT {_PATIENT_COLUMNS} {_patients_from(d)} WHERE p.patientCode = ?",
    )


def latest_questionnaire(d: Dialect) -> Statement:
    """The patient's latest medical history: the row with the highest qaireid.

    Parameters: (patientCode,). Row: qaireid, patientCode, datetime, notes.
    """
    return Statement(
        "latest_questionnaire",
        f"SELECT {d.top(1)}q.qaireid, q.patientCode, q.[datetime], q.notes "
        f"FROM {d.table('CompletedQuestionnaire')} q "
        f"WHERE q.patientCode = ? ORDER BY q.qaireid DESC{d.limit(1)}",
    )


def questionnaire_answers(d: Dialect) -> Statement:
    """Answers of one questionnaire, in question order.

    The answer is the pre-set answer's text when AnswerId names one, else the first non-NULL
    typed answer (text, number, date, currency); the reader picks it and turns a number or a
    date into text, exactly (CONVERT(varchar, float) would keep only 6 significant digits).
    Parameters: (qaireid,). Row: question text, pre-set answer text, TextAnswer, NumberAnswer,
    DateAnswer, CurrencyAnswer, answer notes.
    """
    return Statement(
        "questionnaire_answers",
        "SELECT qu.[Text], m.[Text], a.TextAnswer, a.NumberAnswer, a.DateAnswer, "
        "a.CurrencyAnswer, a.Notes "
        f"FROM {d.table('CompletedQuestionnaireAnswer')} a "
        f"LEFT JOIN {d.table('Question')} qu ON qu.QuestionID = a.QuestionId "
        f"LEFT JOIN {d.table('QuestionMultiAnswer')} m ON m.AnswerId = a.AnswerId "
        "WHERE a.qaireid = ? ORDER BY a.QuestionId, a.AnswerId",
    )


def appointments_page(d: Dialect, page_size: int, *, first: bool) -> Statement:
    """One keyset page of appointments ordered by ApptId; unknown flags give a NULL status.

    Parameters: none when `first`, else (last ApptId of the previous page,).
    Row: ApptId, PatientCode, ApptDateTime, ApptFlag, status (ApptFlags.Description).
    """
    where = "" if first else "WHERE ap.ApptId > ? "
    return Statement(
        "appointments_first_page" if first else "appointments_next_page",
        f"SELECT {d.top(page_size)}ap.ApptId, ap.PatientCode, ap.ApptDateTime, ap.ApptFlag, "
        f"f.Description FROM {d.table('Appts')} ap "
        f"LEFT JOIN {d.table('ApptFlags')} f ON f.ApptFlag = ap.ApptFlag "
        f"{where}ORDER BY ap.ApptId{d.limit(page_size)}",
    )


def appointment_ids_page(d: Dialect, page_size: int, *, first: bool) -> Statement:
    """The keys of the `appointments_page` with the same parameters, alone (see
    `patient_codes_page`). Parameters: as `appointments_page`. Row: ApptId.
    """
    where = "" if first else "WHERE ap.ApptId > ? "
    return Statement(
        "appointment_ids_first_page" if first else "appointment_ids_next_page",
        f"SELECT {d.top(page_size)}ap.ApptId FROM {d.table('Appts')} ap "
        f"{where}ORDER BY ap.ApptId{d.limit(page_size)}",
    )


def appointment_flags(d: Dialect) -> Statement:
    """Row: ApptFlag, Description, Character, Cancelled."""
    return Statement(
        "appointment_flags",
        f"SELECT f.ApptFlag, f.Description, f.[Character], f.Cancelled "
        f"FROM {d.table('ApptFlags')} f ORDER BY f.ApptFlag",
    )


def question_counts(d: Dialect) -> Statement:
    """Every question with how many answers it has, counted by id in a sub-query: R4's Text
    columns may be `text`, which SQL Server cannot GROUP BY. Several questions can share a
    text; the reader sums their counts by text.

    Row: question text, answer count.
    """
    return Statement(
        "question_counts",
        f"SELECT qu.[Text], COALESCE(c.n, 0) FROM {d.table('Question')} qu "
        "LEFT JOIN (SELECT QuestionId, COUNT(*) AS n "
        f"FROM {d.table('CompletedQuestionnaireAnswer')} GROUP BY QuestionId) c "
        "ON c.QuestionId = qu.QuestionID ORDER BY qu.QuestionID",
    )


def preset_answer_counts(d: Dialect) -> Statement:
    """Every PRE-SET answer (QuestionMultiAnswer) with how often it was chosen, by id (as
    `question_counts`; many questions have their own "Yes": the reader sums by text).

    Never reads TextAnswer or notes: those are what a patient typed.
    Row: preset answer text, count.
    """
    return Statement(
        "preset_answer_counts",
        f"SELECT m.[Text], COALESCE(c.n, 0) FROM {d.table('QuestionMultiAnswer')} m "
        "LEFT JOIN (SELECT AnswerId, COUNT(*) AS n "
        f"FROM {d.table('CompletedQuestionnaireAnswer')} "
        "WHERE AnswerId IS NOT NULL GROUP BY AnswerId) c "
        "ON c.AnswerId = m.AnswerId ORDER BY m.AnswerId",
    )


def schema_columns(d: Dialect) -> Statement:
    """Row: table name, column name — for every table/view in the database (dbo on mssql)."""
    return Statement("schema_columns", d.schema_columns_sql)
