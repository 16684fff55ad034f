"""`questionnaire-questions-upload`: report every question that has answers, with how many, to
Rollbar in the original agent's shape: message `Questionnaire Data`, `{questions: [{Text,
answerCount}]}`, most answered first (its `... GROUP BY q.Text ORDER BY COUNT(*) DESC`).

Question texts are the practice's form, not a patient's data; answer CONTENT is never read."""

from __future__ import annotations

import logging
from typing import Final

from agent.commands.context import HandlerContext
from agent.commands.envelope import QuestionnaireQuestionsUpload

log = logging.getLogger(__name__)

REPORT_MESSAGE: Final = "Questionnaire Data"  # the original's, for both reports


def report_items(
    counts: list[tuple[str, int]], limit: int | None = None
) -> list[dict[str, object]]:
    """[{Text, answerCount}] of the texts with at least one answer, most answered first (ties
    in R4's order), at most `limit` of them."""
    ranked = sorted((c for c in counts if c[1] > 0), key=lambda c: -c[1])[:limit]
    return [{"Text": text, "answerCount": count} for text, count in ranked]


def handle(command: QuestionnaireQuestionsUpload, ctx: HandlerContext) -> None:
    counts = ctx.records.question_counts()
    items = report_items([(c.question_text, c.answer_count) for c in counts])
    # the original logged it at its "info" level, which it sent as Rollbar's debug
    ctx.errors.report_message(REPORT_MESSAGE, level="debug", extra={"questions": items})
    log.info("questionnaire-questions-upload: reported %d questions", len(items))
