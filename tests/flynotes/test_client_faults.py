"""Backend faults (rejected licence, 5xx, 429, timeouts, refused connections) as the client
sees them over loopback HTTP, and the licence key staying out of every log and error."""

from __future__ import annotations

import logging
import socket
from datetime import date

import pytest

from agent import contract
from agent.clock import FakeClock
from agent.contract import Wire
from agent.errors import PermanentError, TransientError
from agent.flynotes.client import (
    BackendForbiddenError,
    ClientLimits,
    FlynotesClient,
    LicenceRejectedError,
    Timeouts,
    mask_url,
)
from agent.records import AppointmentFlag, Patient
from agent.standin.backend import StandinBackend
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY

CANARY = Patient(900001, "CANARYFORENAME", "CANARYSURNAME", date(1971, 7, 17), None, None)


def _upload_flag(client: FlynotesClient) -> None:
    row = Wire().appointment_status_values(AppointmentFlag(1, "Booked", "B", False))
    client.upload_rows(contract.APPOINTMENT_STATUSES, [row])


def _client(backend: StandinBackend, clock: FakeClock, **kw: object) -> FlynotesClient:
    return FlynotesClient(backend.url, TEST_LICENCE_KEY, clock=clock, **kw)  # type: ignore[arg-type]


def test_rejected_licence_raises_licence_rejected_without_the_key(
    flynotes_standin: StandinBackend,
) -> None:
    flynotes_standin.reject_licence()
    with (
        _client(flynotes_standin, FakeClock()) as client,
        pytest.raises(LicenceRejectedError) as err,
    ):
        client.fetch_scope()
    assert isinstance(err.value, PermanentError)
    assert "HTTP 403" in str(err.value)
    assert "licence" in str(err.value)
    assert TEST_LICENCE_KEY not in str(err.value)


def test_unknown_licence_key_is_rejected(flynotes_standin: StandinBackend) -> None:
    with (
        FlynotesClient(flynotes_standin.url, "someone-elses-key") as client,
        pytest.raises(LicenceRejectedError) as err,
    ):
        client.fetch_scope()
    assert "someone-elses-key" not in str(err.value)


def test_5xx_then_success_is_retried(flynotes_standin: StandinBackend) -> None:
    flynotes_standin.fail_next(2, status=502, endpoint="data")
    with _client(flynotes_standin, FakeClock()) as client:
        assert client.fetch_scope().library_version == "1.0.0"
    assert [r.status for r in flynotes_standin.received] == [502, 502, 200]


def test_persistent_5xx_becomes_transient_after_the_retries(
    flynotes_standin: StandinBackend,
) -> None:
    flynotes_standin.fail_next(50, status=500, endpoint="data")
    clock = FakeClock()
    with (
        _client(flynotes_standin, clock, limits=ClientLimits(retries=3)) as client,
        pytest.raises(TransientError) as err,
    ):
        client.fetch_scope()
    assert len(flynotes_standin.received) == 4
    assert "HTTP 500" in str(err.value)
    assert not isinstance(err.value, LicenceRejectedError)
    assert clock.monotonic() > 1000.0  # backed off between attempts (on the fake clock)


def test_upload_retried_after_5xx_sends_the_whole_body_again(
    flynotes_standin: StandinBackend,
) -> None:
    patients = [Patient(i, "Zoë", "Nuñez", None, None, None) for i in range(1, 501)]
    flynotes_standin.fail_next(1, status=503, endpoint="patient-upload")
    with _client(flynotes_standin, FakeClock()) as c:
        c.upload_rows(contract.PATIENTS, [Wire().patient_values(p) for p in patients])
    failed, ok = flynotes_standin.received_for("patient-upload", status=None)
    assert (failed.status, ok.status) == (503, 200)
    assert ok.rows is not None
    assert len(ok.rows) == 500
    assert failed.body_bytes == ok.body_bytes
    assert failed.body == ok.body  # the same bytes, from the header line on


def test_429_retry_after_is_honoured_on_the_clock(flynotes_standin: StandinBackend) -> None:
    flynotes_standin.throttle_next(1, retry_after="7", endpoint="data")
    clock = FakeClock()
    before = clock.monotonic()
    with _client(flynotes_standin, clock) as client:
        client.fetch_scope()
    assert clock.monotonic() - before == 7.0
    assert [r.status for r in flynotes_standin.received] == [429, 200]


def test_429_with_a_retry_after_beyond_the_limit_is_not_waited_for(
    flynotes_standin: StandinBackend,
) -> None:
    flynotes_standin.throttle_next(1, retry_after="3600", endpoint="patient-sync")
    clock = FakeClock()
    before = clock.monotonic()
    with _client(flynotes_standin, clock) as client, pytest.raises(TransientError) as err:
        client.sync_patient(CANARY, None, "patch-1")
    assert clock.monotonic() == before
    assert "HTTP 429" in str(err.value)
    assert len(flynotes_standin.received) == 1


def test_read_timeout_becomes_transient(flynotes_standin: StandinBackend) -> None:
    flynotes_standin.slow_next(10, seconds=5.0, endpoint="data")
    timeouts = Timeouts(connect=2.0, read=0.2)
    limits = ClientLimits(retries=1)
    client = _client(flynotes_standin, FakeClock(), timeouts=timeouts, limits=limits)
    with client, pytest.raises(TransientError) as err:
        client.fetch_scope()
    assert TEST_LICENCE_KEY not in str(err.value)
    assert err.value.__cause__ is None  # the transport error's message holds the full URL
    assert "no answer in time" in str(err.value)


def test_status_upload_is_not_resent_after_a_500_it_may_have_processed(
    flynotes_standin: StandinBackend,
) -> None:
    flynotes_standin.fail_next(1, status=500, endpoint="appointment-status-upload")
    with _client(flynotes_standin, FakeClock()) as client, pytest.raises(TransientError):
        _upload_flag(client)
    assert len(flynotes_standin.received) == 1


def test_status_upload_is_resent_after_a_503_not_processed(
    flynotes_standin: StandinBackend,
) -> None:
    flynotes_standin.fail_next(1, status=503, endpoint="appointment-status-upload")
    with _client(flynotes_standin, FakeClock()) as client:
        _upload_flag(client)
    assert [r.status for r in flynotes_standin.received] == [503, 200]


def test_patient_sync_is_resent_once_after_a_500_it_may_have_processed_with_the_same_body(
    flynotes_standin: StandinBackend,
) -> None:
    # Safe only because a repeated patient-sync gives the same result (docs/backend-contract.md).
    flynotes_standin.fail_next(1, status=500, endpoint="patient-sync")
    with _client(flynotes_standin, FakeClock()) as client:
        client.sync_patient(CANARY, None, "patch-1")
    failed, ok = flynotes_standin.received_for("patient-sync", status=None)
    assert (failed.status, ok.status) == (500, 200)
    assert failed.body == ok.body and ok.json["patientPatchId"] == "patch-1"
    flynotes_standin.clear_received()
    flynotes_standin.fail_next(10, status=502, endpoint="patient-sync")
    with _client(flynotes_standin, FakeClock()) as client, pytest.raises(TransientError):
        client.sync_patient(CANARY, None, "patch-2")
    assert len(flynotes_standin.received) == 2  # once more, not ClientLimits.retries times


def test_revoked_licence_fails_every_call_not_only_data(flynotes_standin: StandinBackend) -> None:
    flynotes_standin.reject_licence()
    with _client(flynotes_standin, FakeClock()) as client:
        with pytest.raises(BackendForbiddenError) as err:
            client.sync_patient(CANARY, None, "patch-1")
        assert "HTTP 403" in str(err.value) and TEST_LICENCE_KEY not in str(err.value)
        with pytest.raises(BackendForbiddenError):
            client.upload_rows(contract.PATIENTS, [Wire().patient_values(CANARY)])
    assert [r.status for r in flynotes_standin.received] == [403, 403]


def test_other_4xx_is_permanent_and_not_retried(flynotes_standin: StandinBackend) -> None:
    flynotes_standin.fail_next(1, status=422, endpoint="patient-sync")
    with _client(flynotes_standin, FakeClock()) as client, pytest.raises(PermanentError) as err:
        client.sync_patient(CANARY, None, "patch-1")
    assert "HTTP 422" in str(err.value)
    assert len(flynotes_standin.received) == 1


def test_refused_connection_becomes_transient_without_the_key() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = FlynotesClient(
        f"http://127.0.0.1:{port}",
        TEST_LICENCE_KEY,
        clock=FakeClock(),
        limits=ClientLimits(retries=1),
    )
    with client, pytest.raises(TransientError) as err:
        client.fetch_scope()
    assert TEST_LICENCE_KEY not in str(err.value)
    assert "***" in str(err.value)


def test_licence_key_and_patient_data_never_reach_logs_or_errors(
    flynotes_standin: StandinBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    flynotes_standin.fail_next(1, status=503, endpoint="data")
    flynotes_standin.throttle_next(1, retry_after="1", endpoint="patient-upload")
    flynotes_standin.fail_next(5, status=500, endpoint="patient-sync")
    errors: list[str] = []
    with _client(flynotes_standin, FakeClock()) as client:
        client.fetch_scope()
        client.upload_rows(contract.PATIENTS, [Wire().patient_values(CANARY)])
        try:
            client.sync_patient(CANARY, None, "patch-1")
        except TransientError as e:
            errors.append(str(e))
        flynotes_standin.reject_licence()
        try:
            client.fetch_scope()
        except LicenceRejectedError as e:
            errors.append(str(e))
    assert len(errors) == 2
    assert "on-site-servers/***/" in caplog.text  # URLs were logged, masked
    for text in [caplog.text, *errors]:
        assert TEST_LICENCE_KEY not in text
        assert "CANARYSURNAME" not in text
        assert "CANARYFORENAME" not in text
        assert "1971-07-17" not in text


def test_mask_url_hides_the_key_in_urls_paths_and_log_lines() -> None:
    assert (
        mask_url("https://x.example/on-site-servers/abc-123/data?x=1")
        == "https://x.example/on-site-servers/***/data?x=1"
    )
    assert mask_url('"GET /on-site-servers/k%2Fy/patient-sync HTTP/1.1"') == (
        '"GET /on-site-servers/***/patient-sync HTTP/1.1"'
    )
    assert mask_url("/health") == "/health"
