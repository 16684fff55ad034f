"""Bodies sent by the real client over loopback HTTP, as the stand-in received them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from agent.flynotes.client import ClientLimits, FlynotesClient
from agent.records import Answer, Appointment, AppointmentFlag, Patient, Questionnaire
from agent.standin.backend import StandinBackend
from tests.fixtures.flynotes_backend import TEST_LICENCE_KEY

ACCENTED = Patient(
    code=101,
    forename="Siân Zoë",
    surname="Nuñez-O'Brien",
    dob=date(1975, 12, 31),
    mobile="07700 900001",
    email="zoe@example.invalid",
    address1="1 Heol y Frenhines",
    address2='Flat "B", rear',
    address3="Llandaff",
    address4="Caerdydd",
    address5="De Morgannwg",
    postcode="CF5 2YB",
)
NO_ADDRESS = Patient(102, "Aoife", "Ó Súilleabháin", date(1900, 1, 1), None, None)
ONLY_ADDRESS4 = Patient(
    103, "Tom", "Smith", None, None, None, address1="2 Main St", address4="Leeds"
)


def _client(backend: StandinBackend, **kw: object) -> FlynotesClient:
    return FlynotesClient(backend.url, TEST_LICENCE_KEY, **kw)  # type: ignore[arg-type]


# The header lines exactly as the product issue (issue 2) writes them: copied, not imported,
# so that renaming or reordering a field in agent.contract cannot pass.
ISSUE_HEADER_LINES = {
    "patient-upload": "id,familyName,givenName,dateOfBirth,mobileNumber,emailAddress,"
    "addressLine1,addressLine2,city,county,postcode,country",
    "appointment-upload": "apptId,patientCode,apptDateTime,statusCode,status",
    "appointment-status-upload": "apptFlag,cancelled,character,description",
}
UPLOAD_CALLS: dict[str, Callable[[FlynotesClient], int]] = {
    "patient-upload": lambda c: c.upload_patients([ACCENTED, NO_ADDRESS]),
    "appointment-upload": lambda c: c.upload_appointments(
        [Appointment(9001, 101, datetime(2026, 8, 3, 9, 30), 2, "Booked")]
    ),
    "appointment-status-upload": lambda c: c.upload_appointment_flags(
        [AppointmentFlag(2, "Booked", "B", False)]
    ),
}


@pytest.mark.parametrize("endpoint", sorted(UPLOAD_CALLS))
def test_upload_body_starts_with_the_issues_literal_header_line_and_crlf(
    flynotes_standin: StandinBackend, endpoint: str
) -> None:
    with _client(flynotes_standin) as client:
        UPLOAD_CALLS[endpoint](client)
    (request,) = flynotes_standin.received_for(endpoint)
    assert request.body is not None
    first_line = request.body[: request.body.index(b"\n") + 1]
    assert first_line == ISSUE_HEADER_LINES[endpoint].encode("ascii") + b"\r\n"
    assert request.body.endswith(b"\r\n") and b"\r\n" in request.body[len(first_line) :]


def test_patient_upload_csv_matches_the_contract_field_by_field(
    flynotes_standin: StandinBackend,
) -> None:
    with _client(flynotes_standin) as client:
        assert client.upload_patients([ACCENTED, NO_ADDRESS, ONLY_ADDRESS4]) == 3
    (request,) = flynotes_standin.received_for("patient-upload")
    assert request.method == "POST"
    assert request.query == {"performUpsert": ["true"]}
    assert request.headers["content-type"].startswith("text/csv")
    assert request.rows == [
        {
            "id": "101",
            "familyName": "Nuñez-O'Brien",
            "givenName": "Siân Zoë",
            "dateOfBirth": "1975-12-31",
            "mobileNumber": "07700 900001",
            "emailAddress": "zoe@example.invalid",
            "addressLine1": "1 Heol y Frenhines",
            "addressLine2": 'Flat "B", rear',
            "city": "Llandaff, Caerdydd",
            "county": "De Morgannwg",
            "postcode": "CF5 2YB",
            "country": "UK",
        },
        {
            "id": "102",
            "familyName": "Ó Súilleabháin",
            "givenName": "Aoife",
            "dateOfBirth": "",
            "mobileNumber": "",
            "emailAddress": "",
            "addressLine1": "",
            "addressLine2": "",
            "city": "",
            "county": "",
            "postcode": "",
            "country": "UK",
        },
        {
            "id": "103",
            "familyName": "Smith",
            "givenName": "Tom",
            "dateOfBirth": "",
            "mobileNumber": "",
            "emailAddress": "",
            "addressLine1": "2 Main St",
            "addressLine2": "",
            "city": "Leeds",
            "county": "",
            "postcode": "",
            "country": "UK",
        },
    ]


def test_patient_upload_larger_than_the_spool_spills_to_disk_and_arrives_whole(
    flynotes_standin: StandinBackend,
) -> None:
    patients = [
        Patient(i, f"Zoë{i}", "Nuñez", date(1990, 1, 1), None, None) for i in range(1, 3001)
    ]
    with _client(flynotes_standin, limits=ClientLimits(spool_max_bytes=4096)) as client:
        assert client.upload_patients(patients) == 3000
    (request,) = flynotes_standin.received_for("patient-upload")
    assert request.rows is not None
    assert [r["id"] for r in request.rows] == [str(i) for i in range(1, 3001)]
    assert request.rows[2999]["givenName"] == "Zoë3000"
    assert request.headers["content-length"] == str(request.body_bytes)


def test_patient_sync_json_matches_the_contract_with_nulls_for_missing_values(
    flynotes_standin: StandinBackend,
) -> None:
    questionnaire = Questionnaire(
        qaire_id=55,
        patient_code=102,
        completed_at=datetime(2026, 7, 14, 8, 5, 0),
        notes='Says: "no allergies", but check\nnext visit',
        answers=(
            Answer("Are you pregnant?", "No", None),
            Answer("Medication?", None, "Statins, 20mg"),
        ),
    )
    with _client(flynotes_standin) as client:
        client.sync_patient(NO_ADDRESS, questionnaire, "patch-7f")
        client.sync_patient(ACCENTED, None, "patch-80")
    first, second = flynotes_standin.received_for("patient-sync")
    assert first.headers["content-type"] == "application/json"
    assert first.json == {
        "patient": {
            "id": "102",
            "familyName": "Ó Súilleabháin",
            "givenName": "Aoife",
            "dateOfBirth": None,
            "mobileNumber": None,
            "emailAddress": None,
            "addressLine1": None,
            "addressLine2": None,
            "city": None,
            "county": None,
            "postcode": None,
            "country": "UK",
        },
        "questionnaire": {
            "submissionTime": "2026-07-14T07:05:00Z",
            "notes": 'Says: "no allergies", but check\nnext visit',
            "responses": [
                {"questionText": "Are you pregnant?", "answerText": "No", "answerNotes": None},
                {"questionText": "Medication?", "answerText": None, "answerNotes": "Statins, 20mg"},
            ],
        },
        "patientPatchId": "patch-7f",
    }
    assert second.json["questionnaire"] is None
    assert second.json["patient"]["givenName"] == "Siân Zoë"
    assert second.json["patient"]["city"] == "Llandaff, Caerdydd"


def test_appointment_and_status_uploads_match_the_contract(
    flynotes_standin: StandinBackend,
) -> None:
    appointments = [
        Appointment(9001, 101, datetime(2026, 8, 3, 9, 30), 2, "Booked"),
        Appointment(9002, 102, datetime(2026, 12, 3, 16, 0), 77, None),  # unknown flag
    ]
    flags = [
        AppointmentFlag(2, "Booked", "B", False),
        AppointmentFlag(4, "FTA, no call", "F", True),
    ]
    with _client(flynotes_standin) as client:
        assert client.upload_appointments(appointments) == 2
        assert client.upload_appointment_flags(flags) == 2
    (appts,) = flynotes_standin.received_for("appointment-upload")
    (statuses,) = flynotes_standin.received_for("appointment-status-upload")
    assert appts.query == {"performUpsert": ["true"]}
    assert appts.rows == [
        {
            "apptId": "9001",
            "patientCode": "101",
            "apptDateTime": "2026-08-03T08:30:00Z",
            "statusCode": "2",
            "status": "Booked",
        },
        {
            "apptId": "9002",
            "patientCode": "102",
            "apptDateTime": "2026-12-03T16:00:00Z",
            "statusCode": "77",
            "status": "",
        },
    ]
    assert statuses.query == {}
    assert statuses.rows == [
        {"apptFlag": "2", "cancelled": "false", "character": "B", "description": "Booked"},
        {"apptFlag": "4", "cancelled": "true", "character": "F", "description": "FTA, no call"},
    ]


def test_scope_is_parsed_from_data_with_expiration_and_server_date(
    flynotes_standin: StandinBackend,
) -> None:
    expires = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
    flynotes_standin.library_version = "1.4.2"
    flynotes_standin.sqs_queue_url = "http://127.0.0.1:9/123456789012/q"
    flynotes_standin.sqs_region = "eu-west-1"
    flynotes_standin.set_credentials("AKIDSTANDIN", "secret-s", "token-t", expires)
    flynotes_standin.clock_offset = timedelta(hours=-2)
    with _client(flynotes_standin) as client:
        scope = client.fetch_scope()
    assert scope.library_version == "1.4.2"
    assert scope.sqs_queue_url == "http://127.0.0.1:9/123456789012/q"
    assert scope.sqs_region == "eu-west-1"
    assert scope.credentials.access_key_id == "AKIDSTANDIN"
    assert scope.credentials.secret_access_key == "secret-s"
    assert scope.credentials.session_token == "token-t"
    assert scope.credentials.expiration == expires
    assert scope.server_date is not None
    skew = datetime.now(UTC) - scope.server_date
    assert timedelta(hours=1, minutes=59) < skew < timedelta(hours=2, minutes=1)


def test_scope_without_expiration_is_accepted(flynotes_standin: StandinBackend) -> None:
    with _client(flynotes_standin) as client:
        assert client.fetch_scope().credentials.expiration is None


def test_user_agent_names_the_running_version(flynotes_standin: StandinBackend) -> None:
    from agent import __version__

    with _client(flynotes_standin) as client:
        client.fetch_scope()
    (request,) = flynotes_standin.received
    assert request.headers["user-agent"] == f"r4agent/{__version__}"


def test_configured_proxy_carries_every_call(flynotes_standin: StandinBackend) -> None:
    # The stand-in plays the proxy: a request only reaches it through the proxy setting,
    # because the backend's own host name does not resolve.
    with FlynotesClient(
        "http://flynotes-backend.invalid", TEST_LICENCE_KEY, proxy=flynotes_standin.url
    ) as client:
        assert client.fetch_scope().library_version == "1.0.0"
    (request,) = flynotes_standin.received
    assert request.headers["host"] == "flynotes-backend.invalid"
    assert request.path == f"/on-site-servers/{TEST_LICENCE_KEY}/data"
