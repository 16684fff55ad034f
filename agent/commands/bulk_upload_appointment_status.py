"""`bulk-upload-appointment-status`: upload the ApptFlags table (status codes), all of it."""

from __future__ import annotations

from agent.commands.context import HandlerContext
from agent.commands.envelope import BulkUploadAppointmentStatus
from agent.uploads.passes import raise_if_stopped


def handle(command: BulkUploadAppointmentStatus, ctx: HandlerContext) -> None:
    raise_if_stopped(ctx.uploads.run("appointment statuses", ctx.records, full=True))
