"""`bulk-upload-patients`: full upsert upload now (a patient just walked in)."""

from __future__ import annotations

import logging

from agent.commands.context import HandlerContext
from agent.commands.envelope import BulkUploadPatients

log = logging.getLogger(__name__)


def handle(command: BulkUploadPatients, ctx: HandlerContext) -> None:
    sent = ctx.backend.upload_patients(ctx.records.iter_patients())
    log.info("bulk-upload-patients: uploaded %d patients", sent)
