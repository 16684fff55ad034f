"""The small interfaces between the pure core and the side effects, one per effect.

Real defaults live next to the effect (agent.r4.reader, agent.flynotes.client, agent.sqs_queue,
agent.reporting); the composition root (agent.app) wires them. Tests plug in simulators.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from agent.contract import CsvTable, Values
from agent.records import (
    Appointment,
    AppointmentFlag,
    Patient,
    PresetAnswerCount,
    QuestionCount,
    Questionnaire,
)


@dataclass(frozen=True, slots=True, repr=False)
class SqsCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime | None  # aware UTC; None when the backend omits it (assume 36 h)

    def __repr__(self) -> str:  # secrets must not leak through a repr in a log or traceback
        return f"SqsCredentials(access_key_id=***, expiration={self.expiration!r})"


@dataclass(frozen=True, slots=True)
class Scope:
    """What the backend's `/data` endpoint says this licence may do."""

    sqs_queue_url: str
    sqs_region: str
    library_version: str
    credentials: SqsCredentials
    server_date: datetime | None  # the response's Date header, for clock-skew checks


class RecordSource(Protocol):
    """Read-only view of R4. Bulk reads stream (keyset pages); nothing is held in full."""

    def ping(self) -> None:
        """Raise TransientError if the database cannot be reached."""
        ...

    def iter_patients(self) -> Iterator[Patient]: ...

    def get_patient(self, code: int) -> Patient | None: ...

    def latest_questionnaire(self, patient_code: int) -> Questionnaire | None: ...

    def iter_appointments(self) -> Iterator[Appointment]: ...

    def iter_appointment_flags(self) -> Iterator[AppointmentFlag]: ...

    def question_counts(self) -> list[QuestionCount]: ...

    def preset_answer_counts(self) -> list[PresetAnswerCount]: ...


class ErrorSink(Protocol):
    """Where errors and operator messages go off the machine (Rollbar). Never raises."""

    def report_exception(self, exc: BaseException, *, context: dict[str, object]) -> None: ...

    def report_message(self, message: str, *, level: str, extra: dict[str, object]) -> None: ...

    def flush(self, timeout: float) -> None: ...


class Backend(Protocol):
    """The Flynotes backend, by licence key (real default: agent.flynotes.client)."""

    def fetch_scope(self) -> Scope: ...

    def sync_patient(
        self, patient: Patient, questionnaire: Questionnaire | None, patient_patch_id: str
    ) -> None: ...

    def upload_rows(self, table: CsvTable, rows: Sequence[Values]) -> None:
        """POST one chunk of rows (agent.uploads chunks a table). Raises PayloadTooLargeError
        (413) and BackendRefusedError (another 4xx; agent.errors), and the errors
        every call raises (TransientError, BackendForbiddenError, PermanentError)."""
        ...


@dataclass(frozen=True, slots=True)
class TablePass:
    """One table's upload in a cycle, as `r4agent status` shows it: the pass summary's counts
    (`read`, `changed`, `sent`, `skipped`, `refused`, `failed`; agent.uploads), and the error
    type that ended it early, if one did. Counts only: never a record."""

    counts: Mapping[str, int] = field(default_factory=dict)  # agent.uploads.PassSummary
    error: str | None = None  # the exception's type name


class StatusRecorder(Protocol):
    """Where the agent notes what it is doing, for `r4agent status` (real default: the status
    file in the data directory, agent.ops.status_file). Never raises; values are counts,
    versions, times and type names, never patient data."""

    def started(self) -> None: ...

    def version_checked(
        self, wanted: str, action: str, reason: str, *, next_check_in_s: float, life_left_s: float
    ) -> None:
        """A cycle began with a version check; the next one (and the scope refresh) is due in
        `next_check_in_s`."""
        ...

    def uploads_done(self, tables: Mapping[str, TablePass], *, seconds: float) -> None: ...

    def received(self, count: int) -> None:
        """One SQS receive returned `count` messages."""
        ...

    def outcome(self, outcome: str) -> None:
        """A message ended: done / retry / dead-lettered / dropped / coalesced / ..."""
        ...

    def error(self, error: BaseException, *, phase: str) -> None: ...

    def stopped(self, exit_code: str) -> None: ...
