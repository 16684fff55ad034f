"""`questionnaire-answers-upload`: report the unique PRE-SET answers (QuestionMultiAnswer text)
with how often each was chosen. Free-text notes and TextAnswer can hold patient data and are
never read here: RecordSource.preset_answer_counts only returns the pre-set texts."""

from __future__ import annotations

import logging

from agent.commands.context import HandlerContext
from agent.commands.envelope import QuestionnaireAnswersUpload

log = logging.getLogger(__name__)


def handle(command: QuestionnaireAnswersUpload, ctx: HandlerContext) -> None:
    counts = ctx.records.preset_answer_counts()
    ctx.errors.report_message(
        f"questionnaire pre-set answers: {len(counts)} unique",
        level="info",
        extra={
            "unique_preset_answers": len(counts),
            "answers": [{"answer": c.answer_text, "count": c.count} for c in counts],
        },
    )
    log.info("questionnaire-answers-upload: reported %d pre-set answers", len(counts))
