"""Does R4 have every table and column the agent reads? (used by `r4agent doctor`)"""

from __future__ import annotations

from agent.r4 import sql
from agent.r4.connection import R4Database


def check_schema(db: R4Database) -> list[str]:
    """Problems, each naming a table or column ("missing table dbo.Appts",
    "missing column patients.mobileNo"); empty when everything the agent reads is there.

    Names are compared case-insensitively, as R4's SQL Server collation does.
    Raises TransientError/PermanentError (from the connection) if the schema cannot be listed.
    """
    present: dict[str, set[str]] = {}
    for table, column in db.fetch_all(sql.schema_columns(db.dialect)):
        present.setdefault(str(table).lower(), set()).add(str(column).lower())
    problems: list[str] = []
    for table, columns in sql.REQUIRED_COLUMNS.items():
        have = present.get(table.lower())
        if have is None:
            problems.append(f"missing table {db.dialect.table(table)}")
            continue
        problems.extend(
            f"missing column {table}.{column}" for column in columns if column.lower() not in have
        )
    return problems
