"""`bulk-upload-appointments`: upsert upload of every appointment."""

from __future__ import annotations

import logging

from agent.commands.context import HandlerContext
from agent.commands.envelope import BulkUploadAppointments

log = logging.getLogger(__name__)


def handle(command: BulkUploadAppointments, ctx: HandlerContext) -> None:
    sent = ctx.backend.upload_appointments(ctx.records.iter_appointments())
    log.info("bulk-upload-appointments: uploaded %d appointments", sent)
