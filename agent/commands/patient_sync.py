"""`patient-sync`: send one patient and their latest questionnaire; latency critical."""

from __future__ import annotations

import logging

from agent.commands.context import HandlerContext
from agent.commands.envelope import PatientSync
from agent.errors import MessageFault

log = logging.getLogger(__name__)


class UnknownPatientError(MessageFault):
    """The message names a patient code R4 does not have."""

    reason = "unknown-patient"


def handle(command: PatientSync, ctx: HandlerContext) -> None:
    code = command.r4_patient_id
    patient = ctx.records.get_patient(code)
    if patient is None:
        raise UnknownPatientError(f"patient-sync: no patient with code {code} in R4")
    questionnaire = ctx.records.latest_questionnaire(code)
    ctx.backend.sync_patient(patient, questionnaire, command.patient_patch_id)
    log.debug(  # the dispatcher logs the start and the end of the message
        "patient-sync: sent patient %d (%s questionnaire)",
        code,
        "with" if questionnaire is not None else "no",
    )
