"""The one table mapping command type -> handler. A duplicate or missing registration fails
when the registry is built (at start-up), never when a message arrives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.commands import (
    bulk_upload_appointment_status,
    bulk_upload_appointments,
    bulk_upload_patients,
    patient_sync,
    questionnaire_answers,
    questionnaire_questions,
    restart,
    test_message,
)
from agent.commands.context import HandlerContext
from agent.commands.envelope import (
    COMMAND_TYPES,
    BulkUploadAppointments,
    BulkUploadAppointmentStatus,
    BulkUploadPatients,
    Command,
    PatientSync,
    QuestionnaireAnswersUpload,
    QuestionnaireQuestionsUpload,
    Restart,
    TestMessage,
)
from agent.errors import AgentError, MessageFault

C = TypeVar("C", bound=Command)
Handler = Callable[[Any, HandlerContext], None]


class UnhandledTypeError(MessageFault):
    """A command type no handler is registered for (the registry is checked whole at start-up,
    so this is a message of a type the table left out on purpose)."""

    reason = "unknown-type"


class RegistryError(AgentError):
    """The handler table is wrong (a programming error): raised at start-up."""


@dataclass(frozen=True, slots=True)
class Registration:
    command_type: type
    handler: Handler
    # Bulk work runs one at a time, so a burst of bulk commands never runs several full scans of
    # the practice's SQL Server at once; patient-syncs run beside it.
    serial: bool


class Registry:
    def __init__(self) -> None:
        self._table: dict[type, Registration] = {}

    def register(
        self,
        command_type: type[C],
        handler: Callable[[C, HandlerContext], None],
        *,
        serial: bool = False,
    ) -> None:
        if command_type in self._table:
            raise RegistryError(f"a handler for {command_type.TYPE} is already registered")
        self._table[command_type] = Registration(command_type, handler, serial)

    def check_complete(self) -> None:
        missing = [c.TYPE for c in COMMAND_TYPES if c not in self._table]
        if missing:
            raise RegistryError(f"no handler registered for {', '.join(missing)}")

    def registration_for(self, command: Command) -> Registration:
        registration = self._table.get(type(command))
        if registration is None:
            raise UnhandledTypeError(f"no handler for message type {command.TYPE}")
        return registration


# The table: message type -> handler module, and whether it runs serially with other bulk work.
HANDLERS: tuple[tuple[type[Command], Handler, bool], ...] = (
    (PatientSync, patient_sync.handle, False),
    (BulkUploadPatients, bulk_upload_patients.handle, True),
    (BulkUploadAppointments, bulk_upload_appointments.handle, True),
    (BulkUploadAppointmentStatus, bulk_upload_appointment_status.handle, True),
    (Restart, restart.handle, False),
    (TestMessage, test_message.handle, False),
    (QuestionnaireQuestionsUpload, questionnaire_questions.handle, True),
    (QuestionnaireAnswersUpload, questionnaire_answers.handle, True),
)


def default_registry() -> Registry:
    """Build the registry from HANDLERS; raises RegistryError on a duplicate or a gap."""
    registry = Registry()
    for command_type, handler, serial in HANDLERS:
        registry.register(command_type, handler, serial=serial)
    registry.check_complete()
    return registry
