"""`restart`: ask the lifecycle to exit with RESTART_REQUESTED after in-flight work.

The message is deleted like any handled message before the process exits, so it is not seen
again; a duplicate delivery costs one more restart, which is harmless."""

from __future__ import annotations

import logging

from agent.commands.context import HandlerContext
from agent.commands.envelope import Restart

log = logging.getLogger(__name__)


def handle(command: Restart, ctx: HandlerContext) -> None:
    ctx.restart.request()
    log.info("restart: requested; exiting after in-flight work")
