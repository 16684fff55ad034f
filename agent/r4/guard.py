"""The SELECT-only guard: nothing but one read-only query may reach R4.

Pure text analysis, no I/O. String literals and quoted identifiers are blanked first (so
`WHERE notes = 'please DELETE me'` is fine), then the statement must start with SELECT (or a
WITH ... SELECT), must not stack a second statement (T-SQL needs no `;` to do that, hence the
keyword deny-list), and must not carry comments (nothing is hidden from this check).
"""

from __future__ import annotations

import re

from agent.errors import UnsafeStatementError

# Words that start (or turn a SELECT into) a statement that writes, runs code, or changes the
# session. Any of them outside a literal refuses the statement. `INTO` catches SELECT ... INTO.
FORBIDDEN_WORDS = frozenset(
    {
        "ALTER", "ATTACH", "BACKUP", "BEGIN", "BULK", "COMMIT", "CREATE", "DBCC", "DECLARE",
        "DELETE", "DENY", "DETACH", "DROP", "EXEC", "EXECUTE", "GRANT", "INSERT", "INTO",
        "KILL", "MERGE", "OPENDATASOURCE", "OPENQUERY", "OPENROWSET", "OPENXML", "PRAGMA",
        "RECONFIGURE", "RESTORE", "REVOKE", "ROLLBACK", "SAVE", "SET", "SHUTDOWN", "TRUNCATE",
        "UPDATE", "UPDATETEXT", "USE", "VACUUM", "WAITFOR", "WRITETEXT",
    }
)  # fmt: skip

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_@#$]*")


def _blank_literals(sql: str) -> str:
    """Replace '...' / N'...' literals with '' and "..." / [...] identifiers with a placeholder.

    Raises UnsafeStatementError on comments or an unterminated literal.
    """
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"[":
            close = "]" if ch == "[" else ch
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
            out.append("''" if ch == "'" else " quoted_name ")
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
    words = [w.upper() for w in _WORD.findall(body)]
    if not words or words[0] not in ("SELECT", "WITH"):
        raise UnsafeStatementError("refused: only SELECT statements may reach R4")
    if words[0] == "WITH" and "SELECT" not in words:
        raise UnsafeStatementError("refused: WITH without SELECT")
    for word in words:
        if word in FORBIDDEN_WORDS:
            raise UnsafeStatementError(f"refused: keyword {word} is not allowed (SELECT only)")
