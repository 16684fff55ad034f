"""`questionnaire-questions-upload`: report every unique question with its answer count.

Question texts are the practice's form, not a patient's data; answer CONTENT is never read."""

from __future__ import annotations

import logging

from agent.commands.context import HandlerContext
from agent.commands.envelope import QuestionnaireQuestionsUpload

log = logging.getLogger(__name__)


def handle(command: QuestionnaireQuestionsUpload, ctx: HandlerContext) -> None:
    counts = ctx.records.question_counts()
    ctx.errors.report_message(
        f"questionnaire questions: {len(counts)} unique",
        level="info",
        extra={
            "unique_questions": len(counts),
            "questions": [
                {"question": c.question_text, "answers": c.answer_count} for c in counts
            ],
        },
    )
    log.info("questionnaire-questions-upload: reported %d questions", len(counts))
