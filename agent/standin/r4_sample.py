"""An R4-shaped sample database in SQLite: same tables and columns as R4, in two profiles.

Test and demo tooling. The file is WRITTEN with the stdlib sqlite3 module (fast: executemany
in one transaction); the product READS it like production reads R4, through pyodbc + unixODBC +
the SQLite3 ODBC driver (`sqlite_connection_string`). Deterministic for a given seed.

A `Profile` is one table of parameters (`PROFILES`); `generate(..., profile="nasty"|"real")`.

"nasty" (the default, for edge-case tests): Welsh/Irish/accented names (all within
Windows-1252, as R4's varchar columns are), ~10% of patients without an address (NULL or
dangling addressId), NULL mobile/email, 1900-01-01 ("unknown") and future dates of birth,
patients with 0, 1 and many questionnaires, typed answers (NULL AnswerId), free-text notes
(some padded with spaces), appointments whose flag is not in ApptFlags; every rare case is
forced once in every 50 patients, so even a small database has them all.

"real" (a practice as REALITY.md §2 measured one): dense 7-digit codes from 1,000,000; sparse
contact data for old records (of the oldest 30%: ~0.2% with an email, ~4% with a phone),
recent ones mostly with a mobile and a title; ~24% of patients with questionnaires (~2 each,
since 2017), ~half the notes blank; ~6 appointments a patient (87% have one), 1.7% of them
with a NULL PatientCode; R4's own ApptFlag values 1-11 in their measured proportions (5 =
Deleted: deleted appointments stay as rows); `Duration` a datetime span; appointments from
2001 to 2027, ~0.06% in the future.

With `canary=True` the database holds patient 900001, whose every field is a marker string
(CANARY...) that tests search for in logs, errors and outgoing reports.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from agent.progress import Progress

CANARY_CODE = 900001
CANARY_DOB = date(1971, 7, 17)
CANARY: dict[str, str] = {
    "forename": "CANARYFORENAME",
    "surname": "CANARYSURNAME",
    "email": "canary.email@example.invalid",
    "mobile": "07000CANARY",
    "address1": "1 CANARYSTREET",
    "postcode": "CA1 1NY",
    "notes": "CANARYNOTES",  # CompletedQuestionnaire.notes
    "answer_notes": "CANARYANSWERNOTES",  # CompletedQuestionnaireAnswer.Notes
    "text_answer": "CANARYTEXTANSWER",
}

# Declared types matter: the SQLite3 ODBC driver maps them to ODBC types (DATETIME ->
# timestamp, BIT -> bit, INTEGER -> int, VARCHAR(n <= 255) -> varchar, TEXT -> long varchar).
SCHEMA: dict[str, str] = {
    "patients": (
        "patientCode INTEGER PRIMARY KEY, forename VARCHAR(50), surname VARCHAR(50), "
        "dob DATETIME, mobileNo VARCHAR(30), email VARCHAR(100), addressId INTEGER, "
        "title VARCHAR(10), sex CHAR(1)"
    ),
    "addresses": (
        "addressId INTEGER PRIMARY KEY, address1 VARCHAR(60), address2 VARCHAR(60), "
        "address3 VARCHAR(60), address4 VARCHAR(60), address5 VARCHAR(60), postcode VARCHAR(10)"
    ),
    "CompletedQuestionnaire": (
        "qaireid INTEGER PRIMARY KEY, patientCode INTEGER, [datetime] DATETIME, notes TEXT, "
        "[state] INTEGER"
    ),
    "CompletedQuestionnaireAnswer": (
        "qaireid INTEGER, QuestionId INTEGER, AnswerId INTEGER, Notes TEXT, "
        "TextAnswer TEXT, NumberAnswer FLOAT, DateAnswer DATETIME, CurrencyAnswer DECIMAL(19,4)"
    ),
    "Question": "QuestionID INTEGER PRIMARY KEY, [Text] VARCHAR(255)",
    "QuestionMultiAnswer": "AnswerId INTEGER PRIMARY KEY, [Text] VARCHAR(255)",
    "Appts": (  # Duration's type is the profile's
        "ApptId INTEGER PRIMARY KEY, PatientCode INTEGER, ApptDateTime DATETIME, "
        "ApptFlag INTEGER, Duration {duration_type}"
    ),
    "ApptFlags": (
        "ApptFlag INTEGER PRIMARY KEY, Description VARCHAR(50), [Character] CHAR(1), Cancelled BIT"
    ),
}
INDEXES = (
    "CREATE INDEX ix_cq_patient ON CompletedQuestionnaire (patientCode, qaireid)",
    "CREATE INDEX ix_cqa_qaire ON CompletedQuestionnaireAnswer (qaireid)",
)

FORENAMES = (
    "Siân", "Zoë", "Siobhán", "Dafydd", "Rhiannon", "Gruffudd", "Ceridwen", "Eluned", "Iolo",
    "Ffion", "Aoife", "Niamh", "Caoimhe", "Ciarán", "Seán", "Bríd", "Pádraig", "Róisín",
    "Éanna", "Méabh", "Chloé", "Renée", "José", "Jürgen", "Björn", "François", "Noël",
    "Anaïs", "Þóra", "John", "Mary", "David", "Sarah", "James", "Emma", "Mohammed", "Priya",
    "Olivia", "Jack", "Amélie", "Joanne-Marie", "Mary Kate", "D'Arcy",
)  # fmt: skip
SURNAMES = (
    "O'Brien", "Nuñez", "Ní Bhriain", "Ó Súilleabháin", "Mac Giolla Phádraig", "ap Rhys",
    "Llewellyn", "Jones", "Davies", "Evans", "Williams", "Thomas", "Roberts", "Hughes",
    "O'Sullivan", "McCarthy", "Ó Dónaill", "D'Arcy", "Smith-Jones", "Müller", "Brontë",
    "van der Berg", "MacDonald", "ffrench", "Øvergaard", "García Márquez", "Ng", "Patel",
    "Nic an tSaoi", "Fitzgerald", "Lloyd", "Pryce", "Gwynedd",
)  # fmt: skip
STREETS = (
    "Heol y Frenhines", "Stryd Fawr", "Ffordd Caerdydd", "Bóthar na Trá", "Church Lane",
    "High Street", "Mill Road", "Station Road", "Pen-y-Bryn", "Lôn Goed", "St. Mary's Close",
    "Rue de l'Église",
)  # fmt: skip
TOWNS = (
    "Aberystwyth", "Caernarfon", "Llanfair PG", "Ystradgynlais", "Dún Laoghaire", "Cork",
    "Swansea", "Bangor", "Machynlleth", "Leeds", "London", "Newry",
)  # fmt: skip
COUNTIES = ("Ceredigion", "Gwynedd", "Powys", "Co. Down", "West Yorkshire", None, "Dyfed")
QUESTIONS = (
    "Are you currently taking any medication?",
    "Do you have any allergies (e.g. penicillin, latex)?",
    "Are you pregnant or breastfeeding?",
    "Do you smoke? If so, how many per day?",
    "Have you ever had a reaction to a local anaesthetic?",
    "Do you have a heart condition or a pacemaker?",
    "Are you diabetic?",
    "Do you take blood thinners (warfarin, rivaroxaban...)?",
    "Have you had rheumatic fever?",
    "Do you have epilepsy?",
    "Name of your GP surgery",
    "Date of your last dental visit",
    "Weight (kg)",
    "Amount paid today (£)",
    "Any other medical conditions we should know about?",
    "Do you bruise easily or bleed for a long time?",
    "Have you been treated for cancer (radiotherapy/chemotherapy)?",
    "Do you take bisphosphonates?",
)
# per question: how it is answered — "preset", "text", "number", "date", "currency"
QUESTION_KIND = (
    "preset", "text", "preset", "text", "preset", "preset", "preset", "preset", "preset",
    "preset", "text", "date", "number", "currency", "text", "preset", "preset", "preset",
)  # fmt: skip
PRESETS = ("Yes", "No", "Not sure", "Don't know", "Prefer not to say", "Yes – see notes")
FLAGS = (
    (0, "Booked", "B", False),
    (1, "Arrived", "A", False),
    (2, "In surgery", "S", False),
    (3, "Completed", "C", False),
    (4, "Cancelled by patient", "X", True),
    (5, "Cancelled by practice", "P", True),
    (6, "Failed to attend", "F", False),
    (7, "Late cancellation", "L", True),
)
UNKNOWN_FLAGS = (9, 42, 99, 250)
# R4's own flags and how many of a real practice's 101,051 appointments carried each
# (REALITY.md §2). Character and Cancelled were not measured: our reading of the names.
R4_FLAGS = (
    (1, "Complete", "C", False),
    (2, "Cancelled", "X", True),
    (3, "Did Not Attend", "D", False),
    (4, "On Standby", "S", False),
    (5, "Deleted", "Z", True),
    (6, "Pending", "P", False),
    (7, "Waiting", "W", False),
    (8, "In Surgery", "I", False),
    (9, "Late Cancellation", "L", True),
    (10, "Postponed", "O", True),
    (11, "Left Surgery", "F", False),
)
R4_FLAG_COUNTS = (83_836, 4_193, 3_833, 7, 3_932, 2_786, 120, 139, 296, 751, 1_158)
TITLES = ("Mr", "Mrs", "Ms", "Miss", "Dr")
NOTES = (
    "Patient nervous, prefers morning appts.",
    "Allergic to penicillin – see GP letter.",
    "Wedi symud o Gaerdydd; siarad Cymraeg.",
    'Says "no changes" since last visit.',
    "Multi-line note:\nline two\r\nline three",
    "  Takes warfarin; INR 2.5 on 03/02.  ",  # padded, as typed into R4's notes box
    "",
)
TEXT_ANSWERS = (
    "Amoxicillin 500mg, Ramipril", "None", "n/a", "Hay fever – cetirizine", "Ysbyty Gwynedd",
    "Dr. Ní Cheallaigh's surgery", "10 a day", "Asthma (mild), uses inhaler",
    "Nothing to report; feeling grand", "  leading and trailing spaces  ",
)  # fmt: skip

_BASE_DAY = date(2026, 1, 1)  # generation is deterministic: no "today" involved


@dataclass(frozen=True, slots=True)
class Profile:
    """The shape of a generated practice: every rate and range `_fill` draws from. Shares are
    of patients (or of appointments/questionnaires where named so); (old, new) pairs hold for
    the oldest `old_share` of patients (by code) and the newest, and ramp in between."""

    name: str
    codes_after: int  # the first patientCode is this + 1
    next_code_share: float  # a code follows the last one directly, else after a gap ...
    longest_gap: int  # ... of 2 to this (deleted patients)
    rare_cases_every: int  # every rare case forced once per this many patients (0: never)
    no_address_share: float  # addressId NULL
    dangling_address_share: float  # addressId naming no address row
    dob_unknown_share: float  # 1900-01-01, R4's "unknown"
    dob_future_share: float
    dob_null_share: float
    old_share: float
    no_mobile: tuple[float, float]  # (old, new); a fifth of the missing ones are ''
    no_email: tuple[float, float]
    title: tuple[float, float] | None  # share with a title; None: any of TITLES or none
    no_questionnaire_share: float
    one_questionnaire_share: float  # the rest have 2 .. most_questionnaires
    most_questionnaires: int
    first_questionnaire: datetime
    notes_share: float  # questionnaires with a note (one of NOTES, "" among them)
    appointment_counts: tuple[int, ...]  # a patient's number of appointments: one of these
    unknown_flag_share: float  # of appointments: a flag ApptFlags does not list
    null_patient_share: float  # of appointments: PatientCode NULL
    flags: tuple[tuple[int, str, str, bool], ...]  # the ApptFlags rows
    flag_counts: tuple[int, ...]  # relative frequency of each flag on appointments
    appointment_years: tuple[int, int] | None  # (first, last): a patient's appointments run
    # from their first visit (by code) to the base day; None: from 700 days before the base
    # day to 200 after, for everyone
    future_appointment_share: float  # of appointments, with appointment_years set
    durations: tuple[object, ...]  # Appts.Duration values
    duration_type: str  # its declared type
    canary_flag: int  # the canary patient's appointment's flag


def _span(minutes: int) -> str:
    """A Duration as R4 holds it: a datetime on SQL Server's day zero (our assumption of the
    base: REALITY.md §2 found a datetime span, not minutes)."""
    return f"1900-01-01 {minutes // 60:02d}:{minutes % 60:02d}:00"


PROFILES: dict[str, Profile] = {
    "nasty": Profile(
        name="nasty",
        codes_after=1000,
        next_code_share=0.85,
        longest_gap=40,
        rare_cases_every=50,
        no_address_share=0.06,
        dangling_address_share=0.04,
        dob_unknown_share=0.03,
        dob_future_share=0.005,
        dob_null_share=0.005,
        old_share=0.0,
        no_mobile=(0.25, 0.25),
        no_email=(0.25, 0.25),
        title=None,
        no_questionnaire_share=0.35,
        one_questionnaire_share=0.45,
        most_questionnaires=6,
        first_questionnaire=datetime(2019, 1, 1),
        notes_share=0.3,
        appointment_counts=(0, 1, 1, 2, 3),
        unknown_flag_share=0.05,
        null_patient_share=0.0,
        flags=FLAGS,
        flag_counts=(1,) * len(FLAGS),
        appointment_years=None,
        future_appointment_share=0.0,
        durations=(15, 30, 45),
        duration_type="INTEGER",
        canary_flag=0,
    ),
    "real": Profile(
        name="real",
        codes_after=999_999,
        next_code_share=0.99,
        longest_gap=3,
        rare_cases_every=0,
        no_address_share=0.02,
        dangling_address_share=0.0,
        dob_unknown_share=0.01,
        dob_future_share=0.0,
        dob_null_share=0.002,
        old_share=0.3,
        no_mobile=(0.96, 0.12),
        no_email=(0.998, 0.45),
        title=(0.5, 0.95),
        no_questionnaire_share=0.76,
        one_questionnaire_share=0.11,
        most_questionnaires=4,
        first_questionnaire=datetime(2017, 1, 1),
        notes_share=0.595,  # ~49% blank: NULL, or the "" among NOTES
        appointment_counts=(0,) * 13 + tuple(1 + i % 13 for i in range(87)),
        unknown_flag_share=0.0,
        null_patient_share=0.017,
        flags=R4_FLAGS,
        flag_counts=R4_FLAG_COUNTS,
        appointment_years=(2001, 2027),
        future_appointment_share=0.0006,
        durations=tuple(_span(m) for m in (10, 15, 15, 15, 15, 20, 30, 30, 30, 45, 60)),
        duration_type="DATETIME",
        canary_flag=1,
    ),
}
DEFAULT_PROFILE = "nasty"


def sqlite_connection_string(path: Path | str) -> str:
    """ODBC connection string for the SQLite3 driver (unixODBC name `SQLite3`).

    NoCreat: a wrong path is an error, not a silently created empty database.
    Timeout: busy timeout in ms when another process holds a write lock.
    """
    where = os.fspath(path)
    if ";" in where:  # the SQLite3 driver takes no {braced} values: ';' would cut the path
        raise ValueError("a SQLite ODBC database path cannot contain ';'")
    return f"Driver=SQLite3;Database={where};NoCreat=1;Timeout=5000;"


def _fmt(moment: datetime | date | None) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return moment.isoformat(" ", "seconds")
    return f"{moment.isoformat()} 00:00:00"


class _Dice:
    """Fast deterministic choices (random.choice/randint cost several calls each)."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed).random

    def pick(self, seq: Sequence[_T]) -> _T:
        return seq[int(self.random() * len(seq))]

    def between(self, low: int, high: int) -> int:  # inclusive, like randint
        return low + int(self.random() * (high - low + 1))


_T = TypeVar("_T")


class _Rows:
    """One table's pending rows (append to `.rows`); written with executemany on flush."""

    def __init__(self, con: sqlite3.Connection, table: str, columns: int) -> None:
        self.con = con
        self.rows: list[tuple[object, ...]] = []
        marks = ", ".join("?" * columns)
        self.insert = f"INSERT INTO [{table}] VALUES ({marks})"  # noqa: S608 (our table names)

    def flush(self) -> None:
        if self.rows:
            self.con.executemany(self.insert, self.rows)
            self.rows.clear()  # the same list: callers hold its bound .append


def _dob(dice: _Dice, profile: Profile, special: int, usual: Sequence[str]) -> str | None:
    roll = dice.random()
    unknown = profile.dob_unknown_share
    future = unknown + profile.dob_future_share
    if special == _FORCE_UNKNOWN_DOB:
        roll = 0.0
    elif special == _FORCE_FUTURE_DOB:
        roll = unknown
    if roll < unknown:
        return "1900-01-01 00:00:00"  # R4's "unknown"
    if roll < future:
        return _fmt(_BASE_DAY + timedelta(days=dice.between(1, 4000)))  # in the future
    if roll < future + profile.dob_null_share:
        return None
    return dice.pick(usual)


def _mobile(dice: _Dice, missing: float) -> str | None:
    roll = dice.random()
    if roll < missing * 0.8:
        return None
    if roll < missing:
        return ""
    n = dice.between(0, 999999)
    shape = (roll - missing) / (1.0 - missing)  # where among the numbers given
    if shape < 0.2:
        return f"+44 7700 {n:06d}"
    if shape < 7 / 15:
        return f"07700 {n:06d}"
    return f"07700{n:06d}"


def _email(dice: _Dice, missing: float, forename: str, surname: str) -> str | None:
    roll = dice.random()
    if roll < missing:
        return None
    local = _EMAIL_LOCAL[forename, surname]
    shape = (roll - missing) / (1.0 - missing)
    if shape < 1 / 15:
        return local.upper() + "@EXAMPLE.COM"
    if shape < 2 / 15:
        return f"{local}+dentist@example.org"
    return f"{local}{dice.between(1, 99)}@example.com"


def _ramp(profile: Profile, rates: tuple[float, float], age: float) -> float:
    """A rate for a patient `age` of the way from the oldest (0) to the newest (1)."""
    old, new = rates
    if old == new or age <= profile.old_share:
        return old
    return old + (new - old) * (age - profile.old_share) / (1.0 - profile.old_share)


_EMAIL_LOCAL = {
    (f, s): "".join(c for c in f"{f}.{s}".lower() if c.isascii() and c not in " '")
    for f in FORENAMES
    for s in SURNAMES
}
_AREAS = (None, None, "Penparcau", "Llanbadarn Fawr", "Ballsbridge")
_ADDRESS2 = (None, None, "Flat 2", "Ty Gwyn", "The Old Rectory")
_POSTCODES = ("SY23 3BZ", "LL55 1AB", "sa1 1nn", "D02 X285", "BT34 1AA", None, "CF10  1AA")


def _address_tail(dice: _Dice) -> tuple[object, ...]:
    """address1..address5, postcode"""
    return (
        f"{dice.between(1, 240)} {dice.pick(STREETS)}",
        dice.pick(_ADDRESS2),
        dice.pick(_AREAS),
        dice.pick(TOWNS),
        dice.pick(COUNTIES),
        dice.pick(_POSTCODES),
    )


def _answer_body(dice: _Dice, question_index: int) -> tuple[object, ...]:
    """(AnswerId, Notes, TextAnswer, NumberAnswer, DateAnswer, CurrencyAnswer)"""
    notes = dice.pick(NOTES) if dice.random() < 0.15 else None
    kind = QUESTION_KIND[question_index]
    if dice.random() < 0.05:
        return (None, notes, None, None, None, None)  # left blank
    if kind == "preset":
        return (dice.between(1, len(PRESETS)), notes, None, None, None, None)
    if kind == "text":
        return (None, notes, dice.pick(TEXT_ANSWERS), None, None, None)
    if kind == "number":
        weight = dice.between(400, 1300) / 10
        return (None, notes, None, weight, None, None)
    if kind == "date":
        when = _fmt(_BASE_DAY - timedelta(days=dice.between(30, 4000)))
        return (None, notes, None, None, when, None)
    money = f"{dice.between(0, 450)}.{dice.pick((0, 50, 99)):02d}"
    return (None, notes, None, None, None, money)


def generate(
    path: Path,
    patients: int,
    *,
    seed: int = 1,
    canary: bool = False,
    profile: str = DEFAULT_PROFILE,
    progress: Progress | None = None,
) -> None:
    """Write an R4-shaped SQLite database with `patients` patients (plus the canary) to `path`,
    shaped as `profile` ("nasty" or "real", see PROFILES). `progress` counts the patients
    written (a line at least every 10 s of long work).

    Replaces any existing file at `path`. Written to a temporary file in the same folder, then
    moved into place, so a reader never sees a half-written database; the temporary file is
    removed when generation fails or is interrupted (Ctrl-C).
    """
    if patients < 0:
        raise ValueError("patients must be >= 0")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)} (got {profile!r})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    try:
        _write(
            partial, patients, seed=seed, canary=canary, profile=PROFILES[profile],
            progress=progress,
        )
        os.replace(partial, path)
    except BaseException:  # KeyboardInterrupt included: leave no half-written file behind
        partial.unlink(missing_ok=True)
        raise


def _write(
    partial: Path,
    patients: int,
    *,
    seed: int,
    canary: bool,
    profile: Profile,
    progress: Progress | None,
) -> None:
    con = sqlite3.connect(partial)
    try:
        con.execute("PRAGMA journal_mode = OFF")
        con.execute("PRAGMA synchronous = OFF")
        con.execute("PRAGMA locking_mode = EXCLUSIVE")
        con.execute("PRAGMA cache_size = -65536")
        for table, columns in SCHEMA.items():
            declared = columns.format(duration_type=profile.duration_type)
            con.execute(f"CREATE TABLE [{table}] ({declared})")
        con.executemany(
            "INSERT INTO Question VALUES (?, ?)", [(i + 1, q) for i, q in enumerate(QUESTIONS)]
        )
        con.executemany(
            "INSERT INTO QuestionMultiAnswer VALUES (?, ?)",
            [(i + 1, text) for i, text in enumerate(PRESETS)],
        )
        con.executemany("INSERT INTO ApptFlags VALUES (?, ?, ?, ?)", profile.flags)
        _fill(con, _Dice(seed), patients, canary=canary, profile=profile, progress=progress)
        for statement in INDEXES:
            con.execute(statement)
        con.commit()
    finally:
        con.close()


def _fill(
    con: sqlite3.Connection,
    dice: _Dice,
    patients: int,
    *,
    canary: bool,
    profile: Profile,
    progress: Progress | None,
) -> None:
    patient_rows = _Rows(con, "patients", 9)
    address_rows = _Rows(con, "addresses", 7)
    qaire_rows = _Rows(con, "CompletedQuestionnaire", 5)
    answer_rows = _Rows(con, "CompletedQuestionnaireAnswer", 8)
    appt_rows = _Rows(con, "Appts", 5)
    tables = (patient_rows, address_rows, qaire_rows, answer_rows, appt_rows)
    patients_out, addresses_out = patient_rows.rows.append, address_rows.rows.append
    qaires_out, answers_out = qaire_rows.rows.append, answer_rows.rows.append
    appts_out = appt_rows.rows.append
    next_address = next_qaire = next_appt = 1
    p = profile
    flag_pool = _weighted([f[0] for f in p.flags], p.flag_counts)
    n_questions = len(QUESTIONS)
    titles = (*TITLES, None)
    sexes = ("M", "F", None)
    # Pools of pre-made values keep the per-row work small (100,000 patients in seconds).
    address_pool = [_address_tail(dice) for _ in range(4001)]
    answer_pool = [[_answer_body(dice, q) for _ in range(97)] for q in range(n_questions)]
    first_dob = date(1920, 1, 1)
    dob_pool = [_fmt(first_dob + timedelta(days=d)) or "" for d in range(37001)]
    appt_days = [
        datetime.combine(_BASE_DAY + timedelta(days=d), _EIGHT_FIFTEEN) for d in range(-700, 201)
    ]
    appt_pool = [
        _fmt(day + timedelta(minutes=15 * slot)) for day in appt_days for slot in range(37)
    ]
    visits = (
        _Visits(p.appointment_years, p.future_appointment_share, dice)
        if p.appointment_years
        else None
    )
    no_address = p.no_address_share
    dangling = no_address + p.dangling_address_share
    no_qaire = p.no_questionnaire_share
    one_qaire = no_qaire + p.one_questionnaire_share
    rnd, pick, between = dice.random, dice.pick, dice.between
    code = p.codes_after

    for done in range(patients):
        # every `rare_cases_every` patients the rare cases are forced, so even small databases
        # have them (the nasty profile); -1: none forced
        special = done % p.rare_cases_every if p.rare_cases_every else -1
        age = done / patients  # 0: the oldest record, towards 1: the newest
        code += 1 if rnd() < p.next_code_share else between(2, p.longest_gap)  # deleted ones
        if code == CANARY_CODE:
            code += 1
        forename, surname = pick(FORENAMES), pick(SURNAMES)
        if special in _FORCED_NAMES:
            forename, surname = _FORCED_NAMES[special]
        roll = 0.0 if special == _FORCE_NO_ADDRESS else rnd()
        address_id: int | None
        if roll < no_address:
            address_id = None
        elif roll < dangling:
            address_id = 10_000_000 + code  # dangling: the address row is gone
        else:
            address_id = next_address
            addresses_out((next_address, *pick(address_pool)))
            next_address += 1
        dob = _dob(dice, p, special, dob_pool)
        mobile = _mobile(dice, _ramp(p, p.no_mobile, age))
        email = _email(dice, _ramp(p, p.no_email, age), forename, surname)
        if p.title is None:
            title = pick(titles)
        else:
            title = pick(TITLES) if rnd() < _ramp(p, p.title, age) else None
        patients_out(
            (code, forename, surname, dob, mobile, email, address_id, title, pick(sexes))
        )
        roll = rnd()
        if roll < no_qaire:
            count = 0
        elif roll < one_qaire:
            count = 1
        else:
            count = between(2, p.most_questionnaires)
        if special == _FORCE_MANY_QUESTIONNAIRES:
            count = 5
        when = p.first_questionnaire + timedelta(minutes=between(0, 2_000_000))
        for nth in range(count, 0, -1):
            when += timedelta(days=between(30, 400), minutes=between(0, 600))
            notes = pick(NOTES) if rnd() < p.notes_share else None
            qaires_out((next_qaire, code, _fmt(when), notes, between(1, 2)))
            first_question = between(0, n_questions - 1)
            # the latest (what the agent reads) has 3-7 answers, older ones 1-3: fewer rows
            answers = between(3, 7) if nth == 1 else between(1, 3)
            for k in range(answers):  # distinct questions: a window that wraps
                q = (first_question + k) % n_questions
                answers_out((next_qaire, q + 1, *answer_pool[q][int(rnd() * 97)]))
            next_qaire += 1
        # appointments, some with flags ApptFlags does not know or with no patient
        for k in range(max(pick(p.appointment_counts), special == _FORCE_UNKNOWN_FLAG)):
            unknown = rnd() < p.unknown_flag_share or (special == _FORCE_UNKNOWN_FLAG and k == 0)
            flag = pick(UNKNOWN_FLAGS) if unknown else pick(flag_pool)
            patient = None if p.null_patient_share and rnd() < p.null_patient_share else code
            moment = pick(appt_pool) if visits is None else visits.moment(age)
            appts_out((next_appt, patient, moment, flag, pick(p.durations)))
            next_appt += 1
        if done % _FLUSH_EVERY == _FLUSH_EVERY - 1:
            for table in tables:
                table.flush()
        if progress is not None:
            progress.advance()

    if canary:
        c = CANARY
        addresses_out((next_address, c["address1"], None, None, None, None, c["postcode"]))
        patients_out(
            (
                CANARY_CODE, c["forename"], c["surname"], _fmt(CANARY_DOB),
                c["mobile"], c["email"], next_address, "Mx", None,
            )
        )  # fmt: skip
        # an older questionnaire, then the latest one carrying the canary notes (of the
        # questionnaire and of a pre-set answer) and typed answer
        qaires_out((next_qaire, CANARY_CODE, "2024-03-01 09:30:00", None, 1))
        answers_out((next_qaire, 1, 2, None, None, None, None, None))
        qaires_out((next_qaire + 1, CANARY_CODE, "2025-06-02 10:15:00", c["notes"], 1))
        answers_out((next_qaire + 1, 1, 1, c["answer_notes"], None, None, None, None))
        answers_out((next_qaire + 1, 2, None, None, c["text_answer"], None, None, None))
        canary_appointment = ("2026-02-03 14:00:00", p.canary_flag, p.durations[1])
        appts_out((next_appt, CANARY_CODE, *canary_appointment))

    for table in tables:
        table.flush()


def _weighted(values: Sequence[int], counts: Sequence[int]) -> tuple[int, ...]:
    """A pool to `pick` from in which each value appears in proportion to its count (at most
    ~10,000 entries; each value at least once)."""
    scale = max(1.0, sum(counts) / 10_000)
    return tuple(
        v for v, n in zip(values, counts, strict=True) for _ in range(max(1, round(n / scale)))
    )


class _Visits:
    """Appointment times of the real profile: a patient's run from their first visit (the
    older the record, the earlier: `age` 0 is the first day) to the base day, a few booked
    after it, up to the last year's end; 37 quarter-hour slots a day from 08:15."""

    def __init__(self, years: tuple[int, int], future_share: float, dice: _Dice) -> None:
        first, last = date(years[0], 1, 1), date(years[1], 12, 31)
        self.future_share = future_share
        self.days = [f"{first + timedelta(days=d)} " for d in range((last - first).days + 1)]
        self.past = (_BASE_DAY - first).days
        self.slots = [
            (datetime.combine(first, _EIGHT_FIFTEEN) + timedelta(minutes=15 * k)).strftime(
                "%H:%M:%S"
            )
            for k in range(37)
        ]
        self.dice = dice

    def moment(self, age: float) -> str:
        rnd = self.dice.random
        if rnd() < self.future_share:
            day = self.past + int(rnd() * (len(self.days) - self.past))
        else:
            since = int(age * (self.past - 1))
            day = since + int(rnd() * (self.past - since))
        return self.days[day] + self.slots[int(rnd() * len(self.slots))]


_EIGHT_FIFTEEN = time(8, 15)
_FLUSH_EVERY = 10000  # patients between executemany batches (bounds the generator's memory)
# positions (patient index % 50) where rare cases are forced
_FORCE_UNKNOWN_DOB, _FORCE_FUTURE_DOB, _FORCE_NO_ADDRESS = 3, 7, 11
_FORCE_MANY_QUESTIONNAIRES, _FORCE_UNKNOWN_FLAG = 23, 29
_FORCED_NAMES = {17: ("Siân", "O'Brien"), 19: ("Zoë", "Nuñez"), 31: ("Siobhán", "Ní Bhriain")}
