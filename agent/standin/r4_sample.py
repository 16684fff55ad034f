"""An R4-shaped sample database in SQLite: same tables and columns as R4, realistic and nasty.

Test and demo tooling. The file is WRITTEN with the stdlib sqlite3 module (fast: executemany
in one transaction); the product READS it like production reads R4, through pyodbc + unixODBC +
the SQLite3 ODBC driver (`sqlite_connection_string`). Deterministic for a given seed.

What makes it nasty, as real practices are: Welsh/Irish/accented names (all within
Windows-1252, as R4's varchar columns are), ~10% of patients without an address (NULL or
dangling addressId), NULL mobile/email, 1900-01-01 ("unknown") and future dates of birth,
patients with 0, 1 and many questionnaires, typed answers (NULL AnswerId), free-text notes
(some padded with spaces), and appointments whose flag is not in ApptFlags.

With `canary=True` the database holds patient 900001, whose every field is a marker string
(CANARY...) that tests search for in logs, errors and outgoing reports.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Sequence
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
    "Appts": (
        "ApptId INTEGER PRIMARY KEY, PatientCode INTEGER, ApptDateTime DATETIME, "
        "ApptFlag INTEGER, Duration INTEGER"
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


def _dob(dice: _Dice, special: int, usual: Sequence[str]) -> str | None:
    roll = dice.random()
    if special == _FORCE_UNKNOWN_DOB:
        roll = 0.0
    elif special == _FORCE_FUTURE_DOB:
        roll = 0.031
    if roll < 0.03:
        return "1900-01-01 00:00:00"  # R4's "unknown"
    if roll < 0.035:
        return _fmt(_BASE_DAY + timedelta(days=dice.between(1, 4000)))  # in the future
    if roll < 0.04:
        return None
    return dice.pick(usual)


def _mobile(dice: _Dice) -> str | None:
    roll = dice.random()
    if roll < 0.2:
        return None
    if roll < 0.25:
        return ""
    n = dice.between(0, 999999)
    if roll < 0.4:
        return f"+44 7700 {n:06d}"
    if roll < 0.6:
        return f"07700 {n:06d}"
    return f"07700{n:06d}"


def _email(dice: _Dice, forename: str, surname: str) -> str | None:
    roll = dice.random()
    if roll < 0.25:
        return None
    local = _EMAIL_LOCAL[forename, surname]
    if roll < 0.3:
        return local.upper() + "@EXAMPLE.COM"
    if roll < 0.35:
        return f"{local}+dentist@example.org"
    return f"{local}{dice.between(1, 99)}@example.com"


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
    progress: Progress | None = None,
) -> None:
    """Write an R4-shaped SQLite database with `patients` patients (plus the canary) to `path`.
    `progress` counts the patients written (a line at least every 10 s of long work).

    Replaces any existing file at `path`. Written to a temporary file in the same folder, then
    moved into place, so a reader never sees a half-written database; the temporary file is
    removed when generation fails or is interrupted (Ctrl-C).
    """
    if patients < 0:
        raise ValueError("patients must be >= 0")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    try:
        _write(partial, patients, seed=seed, canary=canary, progress=progress)
        os.replace(partial, path)
    except BaseException:  # KeyboardInterrupt included: leave no half-written file behind
        partial.unlink(missing_ok=True)
        raise


def _write(
    partial: Path, patients: int, *, seed: int, canary: bool, progress: Progress | None
) -> None:
    con = sqlite3.connect(partial)
    try:
        con.execute("PRAGMA journal_mode = OFF")
        con.execute("PRAGMA synchronous = OFF")
        con.execute("PRAGMA locking_mode = EXCLUSIVE")
        con.execute("PRAGMA cache_size = -65536")
        for table, columns in SCHEMA.items():
            con.execute(f"CREATE TABLE [{table}] ({columns})")
        con.executemany(
            "INSERT INTO Question VALUES (?, ?)", [(i + 1, q) for i, q in enumerate(QUESTIONS)]
        )
        con.executemany(
            "INSERT INTO QuestionMultiAnswer VALUES (?, ?)",
            [(i + 1, text) for i, text in enumerate(PRESETS)],
        )
        con.executemany("INSERT INTO ApptFlags VALUES (?, ?, ?, ?)", FLAGS)
        _fill(con, _Dice(seed), patients, canary=canary, progress=progress)
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
    flag_ids = [f[0] for f in FLAGS]
    n_questions = len(QUESTIONS)
    titles = ("Mr", "Mrs", "Ms", "Miss", "Dr", None)
    sexes = ("M", "F", None)
    appt_counts = (0, 1, 1, 2, 3)
    first_qaire = datetime(2019, 1, 1)
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
    rnd, pick, between = dice.random, dice.pick, dice.between
    code = 1000

    for done in range(patients):
        # every 50 patients, the rare nasty cases are forced, so even small databases have them
        special = done % 50
        code += 1 if rnd() < 0.85 else between(2, 40)  # gaps: deleted patients
        if code == CANARY_CODE:
            code += 1
        forename, surname = pick(FORENAMES), pick(SURNAMES)
        if special in _FORCED_NAMES:
            forename, surname = _FORCED_NAMES[special]
        roll = 0.0 if special == _FORCE_NO_ADDRESS else rnd()
        address_id: int | None
        if roll < 0.06:
            address_id = None
        elif roll < 0.10:
            address_id = 10_000_000 + code  # dangling: the address row is gone
        else:
            address_id = next_address
            addresses_out((next_address, *pick(address_pool)))
            next_address += 1
        patients_out(
            (
                code,
                forename,
                surname,
                _dob(dice, special, dob_pool),
                _mobile(dice),
                _email(dice, forename, surname),
                address_id,
                pick(titles),
                pick(sexes),
            )
        )
        # questionnaires: ~35% none, ~45% one, ~20% several (2-6)
        roll = rnd()
        count = 0 if roll < 0.35 else 1 if roll < 0.8 else between(2, 6)
        if special == _FORCE_MANY_QUESTIONNAIRES:
            count = 5
        when = first_qaire + timedelta(minutes=between(0, 2_000_000))
        for nth in range(count, 0, -1):
            when += timedelta(days=between(30, 400), minutes=between(0, 600))
            notes = pick(NOTES) if rnd() < 0.3 else None
            qaires_out((next_qaire, code, _fmt(when), notes, between(1, 2)))
            first_question = between(0, n_questions - 1)
            # the latest (what the agent reads) has 3-7 answers, older ones 1-3: fewer rows
            answers = between(3, 7) if nth == 1 else between(1, 3)
            for k in range(answers):  # distinct questions: a window that wraps
                q = (first_question + k) % n_questions
                answers_out((next_qaire, q + 1, *answer_pool[q][int(rnd() * 97)]))
            next_qaire += 1
        # appointments: 0-3, some with flags ApptFlags does not know
        for k in range(max(pick(appt_counts), special == _FORCE_UNKNOWN_FLAG)):
            unknown = rnd() < 0.05 or (special == _FORCE_UNKNOWN_FLAG and k == 0)
            flag = pick(UNKNOWN_FLAGS) if unknown else pick(flag_ids)
            appts_out((next_appt, code, pick(appt_pool), flag, pick((15, 30, 45))))
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
        appts_out((next_appt, CANARY_CODE, "2026-02-03 14:00:00", 0, 30))

    for table in tables:
        table.flush()


_EIGHT_FIFTEEN = time(8, 15)
_FLUSH_EVERY = 10000  # patients between executemany batches (bounds the generator's memory)
# positions (patient index % 50) where rare cases are forced
_FORCE_UNKNOWN_DOB, _FORCE_FUTURE_DOB, _FORCE_NO_ADDRESS = 3, 7, 11
_FORCE_MANY_QUESTIONNAIRES, _FORCE_UNKNOWN_FLAG = 23, 29
_FORCED_NAMES = {17: ("Siân", "O'Brien"), 19: ("Zoë", "Nuñez"), 31: ("Siobhán", "Ní Bhriain")}
