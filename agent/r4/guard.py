"""The SELECT-only guard: nothing but one read-only query may reach R4.

Pure text analysis, no I/O. String literals and quoted names are blanked first (so
`WHERE notes = 'please DELETE me'` is fine). Then, outside them, everything must be on an
allow-list: the statement starts with SELECT (or WITH … SELECT), has no `;` but a final one,
no comment and no character the agent's own statements never use (`@`, `#`, `{`, `:` …); a
word is either a keyword or function the agent's statements use (`ALLOWED_KEYWORDS`,
`ALLOWED_FUNCTIONS`, the latter only when called), or a name: any other word, as long as it
is no keyword of T-SQL or SQLite. T-SQL runs `SELECT 1 DELETE FROM t` as two statements with
no `;` between them, and every statement it can stack starts with such a keyword (or with one
of the few unreserved verbs in `STATEMENT_VERBS`), so a second statement cannot get through.
Number literals are read as T-SQL reads them (`1e1`, `1.e1`, `0x…`), and a letter straight
after one is refused: T-SQL ends the number there and starts a word (`SELECT 1e1DELETE …`,
`SELECT 0xSHUTDOWN`). Table and query hints are refused (`WITH (`, and the lock hints that
would hold up R4's own writes, in `LOCK_HINTS`).
"""

from __future__ import annotations

import re

from agent.errors import UnsafeStatementError

# Every keyword the statements in agent/r4/sql.py use (both dialects, and the schema
# listings), plus a few read-only ones a SELECT could reasonably need. Words here may appear
# anywhere; to add one, check it cannot start or change a statement in either dialect.
ALLOWED_KEYWORDS = frozenset(
    {
        "SELECT", "TOP", "FROM", "WHERE", "LEFT", "INNER", "OUTER", "JOIN", "ON", "AND", "OR",
        "NOT", "IN", "IS", "NULL", "AS", "GROUP", "BY", "ORDER", "ASC", "DESC", "LIMIT",
        "WITH", "DISTINCT",
    }
)  # fmt: skip

# Functions the statements call (and REPLACE, a pure string function); only before "(".
ALLOWED_FUNCTIONS = frozenset({"COUNT", "COALESCE", "REPLACE", "PRAGMA_TABLE_INFO"})

# Reserved keywords of Transact-SQL (learn.microsoft.com, "Reserved Keywords (Transact-SQL)",
# SQL Server 2008 to now).
def _keywords(listing: str) -> frozenset[str]:
    return frozenset(listing.split())


TSQL_RESERVED = _keywords(
    """
    ADD ALL ALTER AND ANY AS ASC AUTHORIZATION BACKUP BEGIN BETWEEN BREAK BROWSE BULK BY
    CASCADE CASE CHECK CHECKPOINT CLOSE CLUSTERED COALESCE COLLATE COLUMN COMMIT COMPUTE
    CONSTRAINT CONTAINS CONTAINSTABLE CONTINUE CONVERT CREATE CROSS CURRENT CURRENT_DATE
    CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER CURSOR DATABASE DBCC DEALLOCATE DECLARE
    DEFAULT DELETE DENY DESC DISK DISTINCT DISTRIBUTED DOUBLE DROP DUMP ELSE END ERRLVL
    ESCAPE EXCEPT EXEC EXECUTE EXISTS EXIT EXTERNAL FETCH FILE FILLFACTOR FOR FOREIGN
    FREETEXT FREETEXTTABLE FROM FULL FUNCTION GOTO GRANT GROUP HAVING HOLDLOCK IDENTITY
    IDENTITY_INSERT IDENTITYCOL IF IN INDEX INNER INSERT INTERSECT INTO IS JOIN KEY KILL LEFT
    LIKE LINENO LOAD MERGE NATIONAL NOCHECK NONCLUSTERED NOT NULL NULLIF OF OFF OFFSETS ON
    OPEN OPENDATASOURCE OPENQUERY OPENROWSET OPENXML OPTION OR ORDER OUTER OVER PERCENT PIVOT
    PLAN PRECISION PRIMARY PRINT PROC PROCEDURE PUBLIC RAISERROR READ READTEXT RECONFIGURE
    REFERENCES REPLICATION RESTORE RESTRICT RETURN REVERT REVOKE RIGHT ROLLBACK ROWCOUNT
    ROWGUIDCOL RULE SAVE SCHEMA SECURITYAUDIT SELECT SEMANTICKEYPHRASETABLE
    SEMANTICSIMILARITYDETAILSTABLE SEMANTICSIMILARITYTABLE SESSION_USER SET SETUSER SHUTDOWN
    SOME STATISTICS SYSTEM_USER TABLE TABLESAMPLE TEXTSIZE THEN TO TOP TRAN TRANSACTION
    TRIGGER TRUNCATE TRY_CONVERT TSEQUAL UNION UNIQUE UNPIVOT UPDATE UPDATETEXT USE USER
    VALUES VARYING VIEW WAITFOR WHEN WHERE WHILE WITH WITHIN WRITETEXT
    """
)

# SQLite's keywords (sqlite.org/lang_keywords.html; the tests compare with the library's own
# sqlite3_keyword_name list).
SQLITE_KEYWORDS = _keywords(
    """
    ABORT ACTION ADD AFTER ALL ALTER ALWAYS ANALYZE AND AS ASC ATTACH AUTOINCREMENT BEFORE
    BEGIN BETWEEN BY CASCADE CASE CAST CHECK COLLATE COLUMN COMMIT CONFLICT CONSTRAINT CREATE
    CROSS CURRENT CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP DATABASE DEFAULT DEFERRABLE
    DEFERRED DELETE DESC DETACH DISTINCT DO DROP EACH ELSE END ESCAPE EXCEPT EXCLUDE EXCLUSIVE
    EXISTS EXPLAIN FAIL FILTER FIRST FOLLOWING FOR FOREIGN FROM FULL GENERATED GLOB GROUP
    GROUPS HAVING IF IGNORE IMMEDIATE IN INDEX INDEXED INITIALLY INNER INSERT INSTEAD
    INTERSECT INTO IS ISNULL JOIN KEY LAST LEFT LIKE LIMIT MATCH MATERIALIZED NATURAL NO NOT
    NOTHING NOTNULL NULL NULLS OF OFFSET ON OR ORDER OTHERS OUTER OVER PARTITION PLAN PRAGMA
    PRECEDING PRIMARY QUERY RAISE RANGE RECURSIVE REFERENCES REGEXP REINDEX RELEASE RENAME
    REPLACE RESTRICT RETURNING RIGHT ROLLBACK ROW ROWS SAVEPOINT SELECT SET TABLE TEMP
    TEMPORARY THEN TIES TO TRANSACTION TRIGGER UNBOUNDED UNION UNIQUE UPDATE USING VACUUM
    VALUES VIEW VIRTUAL WHEN WHERE WINDOW WITH WITHOUT
    """
)

# T-SQL statements that start with an UNRESERVED word (Service Broker, triggers, THROW).
STATEMENT_VERBS = frozenset({"DISABLE", "ENABLE", "GET", "MOVE", "RECEIVE", "SEND", "THROW"})

# Table/query hints that lock what R4 itself writes (a SELECT holding them blocks the practice's
# software). Refused as words anywhere; the `WITH (` that would carry them is refused too.
LOCK_HINTS = frozenset(
    {"TABLOCK", "TABLOCKX", "XLOCK", "UPDLOCK", "HOLDLOCK", "PAGLOCK", "SERIALIZABLE",
     "REPEATABLEREAD"}
)  # fmt: skip

REFUSED_WORDS = (
    TSQL_RESERVED | SQLITE_KEYWORDS | STATEMENT_VERBS | LOCK_HINTS
) - ALLOWED_KEYWORDS

_QUOTES = {"'": "'", '"': '"', "`": "`", "[": "]"}
# What may stand outside literals and names: words, numbers, operators, (), commas, ?, ;
_ALLOWED_CHARACTERS = re.compile(r"[A-Za-z0-9_ \t\r\n,.()*=<>!?+\-/%;']*")
# Left to right, a number or a word (so the digits inside a name like `a1e5` stay in it):
# numbers as T-SQL reads them (`1`, `1.5`, `1.`, `.5`, `1e5`, `1.e1`, `1e`, binary `0x…`).
_TOKEN = re.compile(
    r"(?P<number>0[xX][0-9A-Fa-f]*|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d*)?)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)(?P<call>\s*\()?"
)
_GLUED = re.compile(r"[A-Za-z_@#$]")  # may not follow a number: T-SQL starts a word there
_NAME_PLACEHOLDER = " quoted_name "


def _blank_literals(sql: str) -> str:
    """Replace '...' / N'...' literals with '' and "..." / [...] / `...` names with a
    placeholder name. Raises UnsafeStatementError on comments or an unterminated literal."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in _QUOTES:
            close = _QUOTES[ch]
            j = i + 1
            while True:
                k = sql.find(close, j)
                if k < 0:
                    raise UnsafeStatementError("refused: unterminated quoted text in statement")
                if k + 1 < n and sql[k + 1] == close:  # doubled quote = escaped quote
                    if ch == "[":
                        # T-SQL reads ]] as an escaped ] but SQLite ends the name there: the
                        # dialects would disagree on where the name ends, so refuse it.
                        raise UnsafeStatementError("refused: ]] inside a [bracketed] name")
                    j = k + 2
                    continue
                break
            # Backticks quote names in SQLite only; T-SQL refuses to compile the whole batch
            # on one, so reading them as quotes can only ever hide text from a failed batch.
            out.append("''" if ch == "'" else _NAME_PLACEHOLDER)
            i = k + 1
            continue
        if sql.startswith("--", i) or sql.startswith("/*", i):
            raise UnsafeStatementError("refused: comments are not allowed in statements")
        out.append(ch)
        i += 1
    return "".join(out)


def check_select_only(sql: str) -> None:
    """Raise UnsafeStatementError unless `sql` is a single read-only SELECT.

    The message names the reason and the offending keyword, never the statement's values.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise UnsafeStatementError("refused: empty statement")
    bare = _blank_literals(sql).strip()
    body = bare[:-1].rstrip() if bare.endswith(";") else bare
    if ";" in body:
        raise UnsafeStatementError("refused: more than one statement")
    if not _ALLOWED_CHARACTERS.fullmatch(body):
        raise UnsafeStatementError(
            "refused: a character outside literals that no SELECT of the agent uses"
        )
    words: list[tuple[str, bool]] = []
    for m in _TOKEN.finditer(body):
        if m.group("number") is not None:
            if _GLUED.match(body, m.end()):
                raise UnsafeStatementError("refused: a word glued to a number literal")
            continue
        words.append((m.group("word").upper(), bool(m.group("call"))))
    if not words or words[0][0] not in ("SELECT", "WITH"):
        raise UnsafeStatementError("refused: only SELECT statements may reach R4")
    if words[0][0] == "WITH" and "SELECT" not in (w for w, _ in words):
        raise UnsafeStatementError("refused: WITH without SELECT")
    for word, called in words:
        if word == "WITH" and called:
            raise UnsafeStatementError("refused: table hints (WITH (...)) are not allowed")
        if word in ALLOWED_KEYWORDS or (called and word in ALLOWED_FUNCTIONS):
            continue
        if word in REFUSED_WORDS:
            raise UnsafeStatementError(f"refused: keyword {word} is not allowed (SELECT only)")
        if called:
            what = "a quoted name" if word == _NAME_PLACEHOLDER.strip().upper() else word
            raise UnsafeStatementError(f"refused: function {what} is not allowed (SELECT only)")
