"""`test`: send a test message to Rollbar, proving the agent is alive and reporting."""

from __future__ import annotations

import logging

from agent.commands.context import HandlerContext
from agent.commands.envelope import TestMessage

log = logging.getLogger(__name__)


def handle(command: TestMessage, ctx: HandlerContext) -> None:
    ctx.errors.report_message(
        "r4agent test message",
        level="info",
        extra={"agent_version": ctx.agent_version, "message_id": ctx.delivery.message_id},
    )
    log.info("test: test message sent to the error service")
