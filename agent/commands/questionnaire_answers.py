"""`questionnaire-answers-upload`: report the most chosen PRE-SET answers (QuestionMultiAnswer
text) to Rollbar in the original agent's shape: message `Questionnaire Data`, `{questions:
[{Text, answerCount}]}`, the top 100 (its `SELECT top 100 ... ORDER BY COUNT(*) DESC`).

The original grouped by TextAnswer and NumberAnswer too, so free text a patient typed reached
Rollbar; this report never reads them: RecordSource.preset_answer_counts returns pre-set texts
only."""

from __future__ import annotations

import logging
from typing import Final

from agent.commands.context import HandlerContext
from agent.commands.envelope import QuestionnaireAnswersUpload
from agent.commands.questionnaire_questions import REPORT_MESSAGE, report_items

log = logging.getLogger(__name__)

TOP: Final = 100


def handle(command: QuestionnaireAnswersUpload, ctx: HandlerContext) -> None:
    counts = ctx.records.preset_answer_counts()
    items = report_items([(c.answer_text, c.count) for c in counts], limit=TOP)
    ctx.errors.report_message(REPORT_MESSAGE, level="debug", extra={"questions": items})
    log.info("questionnaire-answers-upload: reported %d pre-set answers", len(items))
