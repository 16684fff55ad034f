"""The questionnaire reports reach Rollbar in the original agent's shape (REALITY §1):
message `Questionnaire Data`, `{questions: [{Text, answerCount}]}`, most answered first; the
answers report carries pre-set answer texts only, never what a patient typed."""

from __future__ import annotations

import json

from agent.commands import questionnaire_answers, questionnaire_questions
from agent.commands.context import HandlerContext, RestartRequest
from agent.commands.envelope import QuestionnaireAnswersUpload, QuestionnaireQuestionsUpload
from agent.commands.questionnaire_questions import report_items
from agent.r4.connection import open_database
from agent.r4.reader import R4Reader
from agent.uploads.passes import Uploads
from tests.fixtures.canary import canaries_in
from tests.fixtures.r4_database import R4SampleDb
from tests.runtime.conftest import RecordingSink


def _reports(db: R4SampleDb) -> list[tuple[str, str, dict[str, object]]]:
    sink = RecordingSink()
    with open_database(db.settings) as connection:
        ctx = HandlerContext(
            records=R4Reader(connection),
            backend=None,  # type: ignore[arg-type]  # the reports send nothing to Flynotes
            errors=sink,
            restart=RestartRequest(),
            agent_version="1.0.0",
            uploads=Uploads(None, errors=sink),  # type: ignore[arg-type]
        )
        questionnaire_questions.handle(QuestionnaireQuestionsUpload(), ctx)
        questionnaire_answers.handle(QuestionnaireAnswersUpload(), ctx)
    return sink.messages


def test_both_reports_have_the_originals_message_and_shape(r4_sample_db: R4SampleDb) -> None:
    (questions, answers) = _reports(r4_sample_db)
    for message, level, extra in (questions, answers):
        assert (message, level, list(extra)) == ("Questionnaire Data", "debug", ["questions"])
        items = extra["questions"]
        assert isinstance(items, list) and items
        assert all(list(i) == ["Text", "answerCount"] for i in items)
        counts = [i["answerCount"] for i in items]
        assert counts == sorted(counts, reverse=True) and min(counts) > 0  # as its ORDER BY
    texts = json.dumps([questions, answers])
    assert "CANARYTEXTANSWER" not in texts and not canaries_in(texts)


def test_report_items_rank_by_count_drop_unanswered_and_cap() -> None:
    counts = [("a", 1), ("b", 0), ("c", 5), ("d", 5), ("e", 2)]
    assert report_items(counts) == [
        {"Text": "c", "answerCount": 5},
        {"Text": "d", "answerCount": 5},
        {"Text": "e", "answerCount": 2},
        {"Text": "a", "answerCount": 1},
    ]
    assert [i["Text"] for i in report_items(counts, limit=2)] == ["c", "d"]
