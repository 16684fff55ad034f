"""`bulk-upload-appointments`: upload the appointments now: the new or changed ones, or every
one with `"full": true`."""

from __future__ import annotations

from agent.commands.context import HandlerContext
from agent.commands.envelope import BulkUploadAppointments
from agent.uploads.passes import raise_if_stopped


def handle(command: BulkUploadAppointments, ctx: HandlerContext) -> None:
    raise_if_stopped(ctx.uploads.run("appointments", ctx.records, full=command.full))
