"""The stand-in refuses what the real backend would refuse, so client bugs show up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import requests

from agent import contract
from agent.standin.backend import LICENCE_KEY_ENV, StandinBackend
from agent.standin.sqs_local import LocalSqs
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY

HEADER = ",".join(contract.PATIENT_FIELDS)
ROW = "5,Nuñez,Zoë,1990-01-01,,,,,,,,UK"


def _post(backend: StandinBackend, endpoint: str, body: bytes, ctype: str, q: str = "") -> int:
    url = f"{backend.url}/on-site-servers/{TEST_LICENCE_KEY}/{endpoint}{q}"
    return requests.post(url, data=body, headers={"Content-Type": ctype}, timeout=5).status_code


def test_csv_with_a_wrong_header_row_is_refused(flynotes_standin: StandinBackend) -> None:
    wrong = HEADER.replace("familyName", "surname")
    body = f"{wrong}\r\n{ROW}\r\n".encode()
    assert _post(flynotes_standin, "patient-upload", body, "text/csv", "?performUpsert=true") == 400
    good = f"{HEADER}\r\n{ROW}\r\n".encode()
    assert _post(flynotes_standin, "patient-upload", good, "text/csv", "?performUpsert=true") == 200


def test_csv_upload_without_the_upsert_flag_is_refused(flynotes_standin: StandinBackend) -> None:
    body = f"{HEADER}\r\n{ROW}\r\n".encode()
    assert _post(flynotes_standin, "patient-upload", body, "text/csv") == 400


def test_csv_with_a_short_row_or_wrong_content_type_is_refused(
    flynotes_standin: StandinBackend,
) -> None:
    short = f"{HEADER}\r\n5,Nuñez\r\n".encode()
    assert (
        _post(flynotes_standin, "patient-upload", short, "text/csv", "?performUpsert=true") == 400
    )
    body = f"{HEADER}\r\n{ROW}\r\n".encode()
    assert (
        _post(flynotes_standin, "patient-upload", body, "text/plain", "?performUpsert=true") == 400
    )
    latin1 = f"{HEADER}\r\n{ROW}\r\n".encode("latin-1")
    assert (
        _post(flynotes_standin, "patient-upload", latin1, "text/csv", "?performUpsert=true") == 400
    )


def test_patient_sync_missing_a_field_is_refused(flynotes_standin: StandinBackend) -> None:
    patient = dict.fromkeys(contract.PATIENT_FIELDS)
    patient["id"] = "5"
    good = {"patient": patient, "questionnaire": None, "patientPatchId": "p1"}
    assert (
        _post(flynotes_standin, "patient-sync", json.dumps(good).encode(), "application/json")
        == 200
    )
    for broken in (
        {"patient": patient, "questionnaire": None},
        {"patient": {**patient, "id": 5}, "questionnaire": None, "patientPatchId": "p1"},
        {"patient": patient, "questionnaire": {"notes": None}, "patientPatchId": "p1"},
        {
            "patient": patient,
            "questionnaire": {"submissionTime": "2026-01-01 10:00", "notes": None, "responses": []},
            "patientPatchId": "p1",
        },
    ):
        body = json.dumps(broken).encode()
        assert _post(flynotes_standin, "patient-sync", body, "application/json") == 400


def test_chunked_upload_without_content_length_is_refused(
    flynotes_standin: StandinBackend,
) -> None:
    def chunks() -> Iterator[bytes]:
        yield f"{HEADER}\r\n".encode()
        yield f"{ROW}\r\n".encode()

    url = f"{flynotes_standin.url}/on-site-servers/{TEST_LICENCE_KEY}/patient-upload"
    response = requests.post(
        url + "?performUpsert=true", data=chunks(), headers={"Content-Type": "text/csv"}, timeout=5
    )
    assert response.status_code == 411


def test_uploads_with_an_unknown_licence_key_are_refused(flynotes_standin: StandinBackend) -> None:
    url = f"{flynotes_standin.url}/on-site-servers/not-the-key/patient-upload?performUpsert=true"
    body = f"{HEADER}\r\n{ROW}\r\n".encode()
    response = requests.post(url, data=body, headers={"Content-Type": "text/csv"}, timeout=5)
    assert response.status_code == 403


def test_standalone_stand_in_takes_the_key_from_the_environment_not_argv() -> None:
    env = {**os.environ, LICENCE_KEY_ENV: TEST_LICENCE_KEY}
    argv = [sys.executable, "-m", "agent.standin.backend", "--library-version", "2.0.1"]
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        data = requests.get(f"{url}/on-site-servers/{TEST_LICENCE_KEY}/data", timeout=5).json()
        assert data["libraryVersion"] == "2.0.1"
        assert requests.get(f"{url}/_standin/summary", timeout=5).json() == {
            "data": {"requests": 1, "accepted": 1, "rows": 0}
        }
        assert TEST_LICENCE_KEY not in " ".join(argv)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_local_sqs_moves_a_message_received_too_often_to_the_dead_letter_queue() -> None:
    with LocalSqs(max_receive_count=1, visibility_timeout=0) as local:
        sqs = local.endpoint.client()
        attributes = sqs.get_queue_attributes(
            QueueUrl=local.endpoint.queue_url, AttributeNames=["RedrivePolicy"]
        )["Attributes"]
        assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 1
        sqs.send_message(QueueUrl=local.endpoint.queue_url, MessageBody='{"type": "poison"}')
        first = sqs.receive_message(QueueUrl=local.endpoint.queue_url, WaitTimeSeconds=1)
        assert len(first.get("Messages", [])) == 1  # received once, never deleted
        second = sqs.receive_message(QueueUrl=local.endpoint.queue_url, WaitTimeSeconds=1)
        assert second.get("Messages", []) == []
        dead = sqs.receive_message(QueueUrl=local.endpoint.dead_letter_queue_url, WaitTimeSeconds=1)
        assert [m["Body"] for m in dead["Messages"]] == ['{"type": "poison"}']
