"""The stand-in refuses what the real backend would refuse, so client bugs show up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from agent.standin.backend import LICENCE_KEY_ENV, StandinBackend
from agent.standin.sqs_local import LocalSqs
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY

# Copied from the product issue (issue 2, "The Flynotes backend contract"), not from the code.
HEADER = (
    "id,familyName,givenName,dateOfBirth,mobileNumber,emailAddress,"
    "addressLine1,addressLine2,city,county,postcode,country"
)
APPT_HEADER = "apptId,patientCode,apptDateTime,statusCode,status"
STATUS_HEADER = "apptFlag,cancelled,character,description"
ROW = "5,Nuñez,Zoë,1990-01-01,,,,,,,,UK"
PATIENT: dict[str, str | None] = {**dict.fromkeys(HEADER.split(",")), "id": "5", "country": "UK"}
RESPONSE = {"questionText": "Allergies?", "answerText": "No", "answerNotes": None}
QUESTIONNAIRE = {"submissionTime": "2026-01-01T10:00:00Z", "notes": None, "responses": [RESPONSE]}
SYNC = {"patient": PATIENT, "questionnaire": QUESTIONNAIRE, "patientPatchId": "p1"}


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
    patient = dict.fromkeys(HEADER.split(","))
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


UPLOADS = {
    "patient-upload": (HEADER, ROW, "?performUpsert=true"),
    "appointment-upload": (APPT_HEADER, "9,5,2026-01-01T10:00:00Z,1,Booked", "?performUpsert=true"),
    "appointment-status-upload": (STATUS_HEADER, "1,false,B,Booked", ""),
}


def _header_variants(header: str) -> dict[str, str]:
    """Header lines a sloppy client could send (each would slip past a dict comparison)."""
    columns = header.split(",")
    return {
        "renamed column": header.replace(columns[1], columns[1] + "X"),
        "reordered columns": ",".join([columns[1], columns[0], *columns[2:]]),
        "missing column": ",".join(columns[:-1]),
        "extra column": header + ",extra",
        "space after comma": ", ".join(columns),
        "byte order mark": "\ufeff" + header,
        "lower case": header.lower(),
    }


def _quoted(line: str) -> str:
    """json2csv's spelling: every field quoted (the test rows hold no quotes or commas)."""
    return ",".join(f'"{v}"' for v in line.split(","))


@pytest.mark.parametrize("endpoint", sorted(UPLOADS))
def test_csv_in_the_original_agents_byte_forms_and_rfc_4180_is_accepted(
    flynotes_standin: StandinBackend, endpoint: str
) -> None:
    # What the real backend has parsed for years (json2csv: quoted header, strings quoted, no
    # line end after the last row; CRLF on Windows, LF elsewhere), and plain RFC 4180.
    header, row, query = UPLOADS[endpoint]
    bodies = {
        "original, CRLF": f"{_quoted(header)}\r\n{_quoted(row)}",
        "original, LF": f"{_quoted(header)}\n{_quoted(row)}\n{_quoted(row)}",
        "RFC 4180": f"{header}\r\n{row}\r\n",
        "LF, final line end": f"{header}\n{row}\n",
    }
    for name, body in bodies.items():
        assert _post(flynotes_standin, endpoint, body.encode(), "text/csv", query) == 200, name
    accepted = flynotes_standin.received_for(endpoint)
    columns = header.split(",")
    assert [len(r.rows or []) for r in accepted] == [1, 2, 1, 1]
    assert all(r.rows == [dict(zip(columns, row.split(","), strict=True))] * len(r.rows or [])
               for r in accepted)  # fmt: skip


@pytest.mark.parametrize("endpoint", sorted(UPLOADS))
def test_csv_whose_header_differs_from_the_issue_is_refused_with_the_reason(
    flynotes_standin: StandinBackend, endpoint: str
) -> None:
    header, row, query = UPLOADS[endpoint]
    bodies = {name: f"{line}\r\n{row}\r\n" for name, line in _header_variants(header).items()}
    bodies["quoted, one name renamed"] = _quoted(header.replace(",", "X,", 1)) + f"\r\n{row}"
    for name, body in bodies.items():
        assert _post(flynotes_standin, endpoint, body.encode(), "text/csv", query) == 400, name
    refused = flynotes_standin.received_for(endpoint, status=400)
    assert len(refused) == len(bodies)
    for request in refused:
        assert request.error == f"CSV header must be exactly the names {header!r}"
        assert request.rows is None
    assert [r.body for r in refused] == [b.encode() for b in bodies.values()]


def test_patient_sync_with_extra_or_missing_keys_at_any_level_is_refused_naming_them(
    flynotes_standin: StandinBackend,
) -> None:
    def send(body: object) -> int:
        return _post(
            flynotes_standin, "patient-sync", json.dumps(body).encode(), "application/json"
        )

    assert send(SYNC) == 200
    assert send({**SYNC, "questionnaire": None}) == 200
    no_given_name = {k: v for k, v in PATIENT.items() if k != "givenName"}
    broken = {
        "body: extra": ({**SYNC, "practiceId": "1"}, "body", "extra ['practiceId']"),
        "body: missing": (
            {k: v for k, v in SYNC.items() if k != "patientPatchId"},
            "body",
            "missing ['patientPatchId']",
        ),
        "patient: extra": ({**SYNC, "patient": {**PATIENT, "nhsNumber": None}}, "patient", "nhs"),
        "patient: missing": ({**SYNC, "patient": no_given_name}, "patient", "['givenName']"),
        "patient: renamed": (
            {**SYNC, "patient": {**no_given_name, "forename": None}},
            "patient",
            "missing ['givenName'], extra ['forename']",
        ),
        "questionnaire: extra": (
            {**SYNC, "questionnaire": {**QUESTIONNAIRE, "qaireId": 3}},
            "questionnaire",
            "extra ['qaireId']",
        ),
        "questionnaire: missing": (
            {**SYNC, "questionnaire": {"submissionTime": None, "responses": []}},
            "questionnaire",
            "missing ['notes']",
        ),
        "response: extra": (
            {**SYNC, "questionnaire": {**QUESTIONNAIRE, "responses": [{**RESPONSE, "id": "1"}]}},
            "response",
            "extra ['id']",
        ),
        "response: missing": (
            {**SYNC, "questionnaire": {**QUESTIONNAIRE, "responses": [{"questionText": "Q"}]}},
            "response",
            "missing ['answerNotes', 'answerText']",
        ),
    }
    for name, (body, _where, _says) in broken.items():
        assert send(body) == 400, name
    refused = flynotes_standin.received_for("patient-sync", status=400)
    assert len(refused) == len(broken)
    for request, (name, (_body, where, says)) in zip(refused, broken.items(), strict=True):
        assert request.error is not None, name
        assert request.error.startswith(f"{where} keys differ from the contract"), name
        assert says in request.error, name


def test_malformed_content_length_is_answered_400_not_a_dropped_connection(
    flynotes_standin: StandinBackend,
) -> None:
    path = f"/on-site-servers/{TEST_LICENCE_KEY}/patient-upload?performUpsert=true"
    url = urlsplit(flynotes_standin.url)
    assert url.hostname is not None and url.port is not None
    for length in ("abc", "-1", "1.5", "²"):
        with socket.create_connection((url.hostname, url.port)) as s:
            request = (
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                f"Content-Length: {length}\r\n\r\n{HEADER}\r\n"
            )
            s.sendall(request.encode())
            s.settimeout(5)
            answer = s.recv(4096).decode("latin-1")
        assert answer.startswith("HTTP/1.1 400 "), length
        assert "Connection: close" in answer
    refused = flynotes_standin.received_for("patient-upload", status=400)
    assert [r.error for r in refused] == ["Content-Length is not a non-negative integer"] * 4
    # and the stand-in still serves
    good = f"{HEADER}\r\n{ROW}\r\n".encode()
    assert _post(flynotes_standin, "patient-upload", good, "text/csv", "?performUpsert=true") == 200


def test_rejected_licence_is_refused_on_every_endpoint_not_only_data(
    flynotes_standin: StandinBackend,
) -> None:
    flynotes_standin.reject_licence()
    base = f"{flynotes_standin.url}/on-site-servers/{TEST_LICENCE_KEY}"
    assert requests.get(f"{base}/data", timeout=5).status_code == 403
    for endpoint, (header, row, query) in UPLOADS.items():
        body = f"{header}\r\n{row}\r\n".encode()
        assert _post(flynotes_standin, endpoint, body, "text/csv", query) == 403, endpoint
    sync = json.dumps(SYNC).encode()
    assert _post(flynotes_standin, "patient-sync", sync, "application/json") == 403
    flynotes_standin.reject_licence(False)
    assert requests.get(f"{base}/data", timeout=5).status_code == 200
    assert _post(flynotes_standin, "patient-sync", sync, "application/json") == 200


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
            "data": {"requests": 1, "accepted": 1, "rows": 0, "bytes": 0}
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
