"""Driver error messages made safe to log: keep what is known to be safe, withhold the rest.

pyodbc formats an error as `[SQLSTATE] <message> (<native error>) (<ODBC function>)` and adds
each further diagnostic record as `; [SQLSTATE] <message> (<native error>)`; a message starts
with its components (`[Microsoft][ODBC Driver 17 for SQL Server][SQL Server]`). The message
text is untrusted: SQL Server quotes row values without escaping their quotes
(`value 'O'Brien'`), lists key values in parentheses, other drivers say what they like. So a
message is kept only when it matches, whole, one of the templates below, whose variable parts
are names the statement itself mentions (or R4 table/column names), SQL type names, numbers,
and values, which become `***`. Any other message becomes its SQLSTATE class ("data
exception"); the SQLSTATE and native error number still identify it exactly (on SQL Server:
`sys.messages`). Pure text work, no I/O.

Values are masked on the WHOLE message before it is split into records: a value can hold
anything, the text of further records included, and its closing quote cannot be told from a
quote inside it. So, reading left to right, a quote opens a name only where a template has a
quoted name (`Invalid object name '`) and closes on a plain identifier; any other quote opens a
value, masked up to the LAST quote of the message. Unquoted text no template knows (a key list
`(Siân, Jones)`) may hold a forged record separator too: nothing after such a record is kept.
The ODBC function pyodbc names is kept only from a fixed list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

WITHHELD = "message withheld: it may quote row values"

# The SQLSTATE class (first two characters) says what kind of failure it was.
_STATE_CLASSES: dict[str, str] = {
    "01": "warning",
    "07": "dynamic SQL error",
    "08": "connection failure",
    "21": "cardinality violation",
    "22": "data exception (a value could not be converted or is out of range)",
    "23": "integrity constraint violation",
    "24": "invalid cursor state",
    "25": "invalid transaction state",
    "28": "login refused",
    "3D": "invalid database name",
    "3F": "invalid schema name",
    "40": "transaction rolled back (deadlock victim)",
    "42": "syntax error or access rule violation",
    "HY": "driver error",
    "IM": "driver manager error",
    "S0": "object not found or already there",
    "S1": "driver error",
}

_TYPE = (
    r"(?:bigint|int|smallint|tinyint|bit|decimal|numeric|money|smallmoney|float|real|"
    r"datetime|datetime2|smalldatetime|date|time|datetimeoffset|char|varchar|nchar|nvarchar|"
    r"text|ntext|binary|varbinary|image|uniqueidentifier|xml|sql_variant|expression)"
)
_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"  # each dotted part is checked
_PLACEHOLDERS = {
    # greedy, across lines: from the FIRST quote to the LAST, whatever quotes lie between
    "value": "(?P<value>'(?s:.*)')",
    "type": _TYPE,
    "number": r"\d{1,10}",
}


def _template(pattern: str) -> re.Pattern[str]:
    """Literal text with `{name}`, `{value}`, `{type}`, `{number}` placeholders."""
    pieces = re.split(r"\{(name|value|type|number)\}", pattern)
    regex: list[str] = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            regex.append(re.escape(piece))
        elif piece == "name":
            regex.append(f"(?P<name{i}>{_NAME})")
        else:
            regex.append(_PLACEHOLDERS[piece])
    # SQLite's ODBC driver appends its own result code: "no such table: x (1)"
    return re.compile("".join(regex) + r"(?: \(\d{1,10}\))?")


_TEMPLATE_TEXTS: tuple[str, ...] = (
    # SQL Server (English)
    "Invalid object name '{name}'.",
    "Invalid column name '{name}'.",
    "Ambiguous column name '{name}'.",
    'The multi-part identifier "{name}" could not be bound.',
    "Incorrect syntax near '{name}'.",
    "Incorrect syntax near the keyword '{name}'.",
    "The SELECT permission was denied on the object '{name}', database '{name}', "
    "schema '{name}'.",
    "Conversion failed when converting the {type} value {value} to data type {type}.",
    "Conversion failed when converting date and/or time from character string.",
    "Error converting data type {type} to {type}.",
    "Arithmetic overflow error converting {type} to data type {type}.",
    "Divide by zero error encountered.",
    "String or binary data would be truncated.",
    "Statement(s) could not be prepared.",
    "Transaction (Process ID {number}) was deadlocked on lock resources with another "
    "process and has been chosen as the deadlock victim. Rerun the transaction.",
    "Query timeout expired",
    "Operation canceled",
    "Communication link failure",
    # SQLite
    "no such table: {name}",
    "no such column: {name}",
    "ambiguous column name: {name}",
    'near "{name}": syntax error',
    "database is locked",
    "unable to open database file",
    "attempt to write a readonly database",
    "interrupted",
    # pyodbc itself
    "No results.  Previous SQL was not a query.",
    "Attempt to use a closed cursor.",
    "The cursor's connection has been closed.",
    "Attempt to use a closed connection.",
    "The driver did not supply an error!",
)
_TEMPLATES: tuple[re.Pattern[str], ...] = tuple(_template(t) for t in _TEMPLATE_TEXTS)


def _name_openings(templates: tuple[str, ...]) -> frozenset[tuple[str, str]]:
    """(text before the quote, quote) of every quoted `{name}` in `templates`: the only places
    a quote opens a name rather than a value."""
    openings = set()
    for t in templates:
        for m in re.finditer(r"(['\"])\{name\}", t):
            before = re.split(r"\{(?:name|value|type|number)\}", t[: m.start()])[-1]
            openings.add((before.lstrip("'\""), m.group(1)))
    return frozenset(openings)


_NAME_OPENINGS = _name_openings(_TEMPLATE_TEXTS)
_QUOTED_NAME = re.compile(_NAME)
MASKED_VALUE = "'***'"


def mask_values(message: str) -> str:
    """`message` with every quoted span that is not a template's quoted name replaced by
    `'***'`, from its opening quote to the last quote of the whole message."""
    last = max(message.rfind("'"), message.rfind('"'))
    i = 0
    while True:
        quote = _next_quote(message, i)
        if quote < 0:
            return message
        mark = message[quote]
        close = message.find(mark, quote + 1)
        is_name = (
            close > 0
            and _QUOTED_NAME.fullmatch(message, quote + 1, close) is not None
            and any(mark == q and message.endswith(b, 0, quote) for b, q in _NAME_OPENINGS)
        )
        if not is_name:
            return message[:quote] + MASKED_VALUE + message[last + 1 :]
        i = close + 1


def _next_quote(text: str, start: int) -> int:
    found = [k for k in (text.find("'", start), text.find('"', start)) if k >= 0]
    return min(found) if found else -1


# What pyodbc names as the failing call (its source); anything else there is withheld.
ODBC_FUNCTIONS = frozenset(
    {
        "SQLAllocHandle", "SQLBindParameter", "SQLBrowseConnect", "SQLCancel",
        "SQLCloseCursor", "SQLColAttribute", "SQLColumns", "SQLColumnsW", "SQLConnect",
        "SQLConnectW", "SQLDescribeCol", "SQLDescribeColW", "SQLDescribeParam",
        "SQLDisconnect", "SQLDriverConnect", "SQLDriverConnectW", "SQLEndTran",
        "SQLExecDirect", "SQLExecDirectW", "SQLExecute", "SQLFetch", "SQLFetchScroll",
        "SQLFreeHandle", "SQLFreeStmt", "SQLGetData", "SQLGetInfo", "SQLGetStmtAttr",
        "SQLGetTypeInfo", "SQLMoreResults", "SQLNumParams", "SQLNumResultCols",
        "SQLParamData", "SQLPrepare", "SQLPrepareW", "SQLPutData", "SQLRowCount",
        "SQLSetConnectAttr", "SQLSetConnectAttrW", "SQLSetEnvAttr", "SQLSetStmtAttr",
        "SQLTables",
    }
)  # fmt: skip

# Components that prefix a message; anything else in that position is withheld too.
_COMPONENT = re.compile(
    r"Microsoft|unixODBC|Driver Manager|SQLite|SQL Server|ODBC SQL Server Driver|DBNETLIB|"
    r"SQL Native Client|SQL Server Native Client \d{1,2}\.\d|ODBC Driver \d{1,2} for SQL Server|"
    r"Shared Memory|TCP/IP Sockets|Named Pipes|DBMSSOCN|DBNMPNTW|DBMSLPCN"
)
_RECORD = re.compile(
    r"\[(?P<state>[0-9A-Z]{5})\] (?P<components>(?:\[[^\[\]]*\])*)(?P<text>.*?)"
    r" \((?P<native>-?\d{1,10})\)(?: \((?P<function>SQL[A-Za-z]{1,40})\))?",
    re.DOTALL,
)
_RECORD_SEPARATOR = re.compile(r"; (?=\[[0-9A-Z]{5}\] )")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FIRST_STATE = re.compile(r"\[[0-9A-Z]{5}\] ")


@dataclass(frozen=True, slots=True)
class Record:
    """One diagnostic record of a pyodbc message: `[state] [components]text (native)`."""

    state: str
    text: str  # after the components
    native: int


def records(message: str) -> list[Record]:
    """The diagnostic records of a message, from its first `[SQLSTATE] ` on (text before it,
    such as an agent error's own words, is skipped) up to the first piece that is no record.
    Raw: nothing masked (for messages that read no row, such as a failed connect)."""
    first = _FIRST_STATE.search(message)
    found: list[Record] = []
    for piece in _RECORD_SEPARATOR.split(message[first.start() :] if first else ""):
        m = _RECORD.fullmatch(piece)
        if m is None:
            break
        found.append(Record(m.group("state"), m.group("text"), int(m.group("native"))))
    return found


def known_names(*texts: str) -> frozenset[str]:
    """Lower-cased identifiers of `texts` (statement text, R4 names): names a message may keep."""
    return frozenset(w.lower() for t in texts for w in _IDENTIFIER.findall(t))


def state_class(state: str) -> str:
    if state.startswith("HYT"):
        return "timeout expired"
    return _STATE_CLASSES.get(state[:2], "database error")


def _safe_text(text: str, names: frozenset[str]) -> str | None:
    """`text` with values masked if it matches a template whose names are all known."""
    for template in _TEMPLATES:
        m = template.fullmatch(text)
        if m is None:
            continue
        captured = [v for k, v in m.groupdict().items() if k.startswith("name") and v]
        if not all(part.lower() in names for v in captured for part in v.split(".")):
            return None
        if "value" in template.groupindex:
            start, end = m.span("value")
            return f"{text[:start]}{MASKED_VALUE}{text[end:]}"
        return text
    return None


def _safe_components(components: str) -> str:
    parts = re.findall(r"\[([^\[\]]*)\]", components)
    return "".join(f"[{p}]" if _COMPONENT.fullmatch(p) else "[?]" for p in parts)


def scrub(state: str, message: str, names: Iterable[str] = ()) -> str:
    """The message with only known-safe parts kept. `state` is pyodbc's SQLSTATE ("" when
    pyodbc raised the error itself); `names` are lower-case identifiers a message may name."""
    allowed = frozenset(names)
    if not state:  # pyodbc's own error: no SQLSTATE, no components, one fixed text
        text = _safe_text(message.strip(), allowed)
        return text if text is not None else f"driver error; {WITHHELD}"
    pieces = _RECORD_SEPARATOR.split(mask_values(message))
    records: list[str] = []
    for n, piece in enumerate(pieces, start=1):
        m = _RECORD.fullmatch(piece)
        if m is None:
            records.append(f"[{state}] {state_class(state)}; {WITHHELD}")
            break  # cannot tell where this record ends: nothing after it is trusted either
        text = _safe_text(m.group("text"), allowed)
        if text is None and n < len(pieces):
            # unknown text may hold unquoted values, a forged separator among them: this
            # record's native number and everything after it may be a value's
            records.append(f"[{m.group('state')}] {state_class(m.group('state'))}; {WITHHELD}")
            break
        kept = text if text is not None else f"{state_class(m.group('state'))}; {WITHHELD}"
        function = m.group("function")
        called = "" if function is None else f" ({function if function in ODBC_FUNCTIONS else '?'})"
        records.append(
            f"[{m.group('state')}] {_safe_components(m.group('components'))}{kept} "
            f"({m.group('native')}){called}"
        )
    return "; ".join(records)
