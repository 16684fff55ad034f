"""A missing R4 table or column is reported by name (for `r4agent doctor`)."""

from __future__ import annotations

from agent.r4.connection import open_database
from agent.r4.schema_check import check_schema
from tests.fixtures.r4_database import MakeR4Db, R4SampleDb


def test_complete_r4_schema_has_no_problems(r4_sample_db: R4SampleDb) -> None:
    with open_database(r4_sample_db.settings) as db:
        assert check_schema(db) == []


def test_missing_table_and_column_are_named(make_r4_db: MakeR4Db) -> None:
    broken = make_r4_db(drop_tables=["Appts"], drop_columns=[("patients", "mobileNo")])
    with open_database(broken.settings) as db:
        assert check_schema(db) == ["missing column patients.mobileNo", "missing table Appts"]


def test_every_missing_column_of_a_table_is_listed(make_r4_db: MakeR4Db) -> None:
    broken = make_r4_db(
        drop_columns=[("CompletedQuestionnaireAnswer", "TextAnswer"), ("ApptFlags", "Cancelled")],
        drop_tables=["QuestionMultiAnswer"],
    )
    with open_database(broken.settings) as db:
        problems = check_schema(db)
    assert problems == [
        "missing column CompletedQuestionnaireAnswer.TextAnswer",
        "missing table QuestionMultiAnswer",
        "missing column ApptFlags.Cancelled",
    ]
