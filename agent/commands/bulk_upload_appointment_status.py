"""`bulk-upload-appointment-status`: upload the ApptFlags table (status codes)."""

from __future__ import annotations

import logging

from agent.commands.context import HandlerContext
from agent.commands.envelope import BulkUploadAppointmentStatus

log = logging.getLogger(__name__)


def handle(command: BulkUploadAppointmentStatus, ctx: HandlerContext) -> None:
    sent = ctx.backend.upload_appointment_flags(ctx.records.iter_appointment_flags())
    log.info("bulk-upload-appointment-status: uploaded %d statuses", sent)
