"""`bulk-upload-patients`: upload the patients now (a patient just walked in): the new or
changed ones at once, or every one with `"full": true`."""

from __future__ import annotations

from agent.commands.context import HandlerContext
from agent.commands.envelope import BulkUploadPatients
from agent.uploads.passes import raise_if_stopped


def handle(command: BulkUploadPatients, ctx: HandlerContext) -> None:
    raise_if_stopped(ctx.uploads.run("patients", ctx.records, full=command.full))
