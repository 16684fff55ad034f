"""Bodies sent by the real client over loopback HTTP, as the stand-in received them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from agent import contract
from agent.contract import Wire
from agent.flynotes.client import FlynotesClient
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


# Header names exactly as the product issue (issue 2) writes them: copied, not imported, so
# that renaming or reordering a field in agent.contract cannot pass.
ISSUE_HEADERS = {
    "patient-upload": "id,familyName,givenName,dateOfBirth,mobileNumber,emailAddress,"
    "addressLine1,addressLine2,city,county,postcode,country",
    "appointment-upload": "apptId,patientCode,apptDateTime,statusCode,status",
    "appointment-status-upload": "apptFlag,cancelled,character,description",
}
BST_APPOINTMENT = Appointment(9001, 101, datetime(2026, 8, 3, 9, 30), 2, "Booked")
UPLOAD_CALLS: dict[str, Callable[[FlynotesClient], None]] = {
    "patient-upload": lambda c: c.upload_rows(
        contract.PATIENTS, [Wire().patient_values(p) for p in (ACCENTED, NO_ADDRESS)]
    ),
    "appointment-upload": lambda c: c.upload_rows(
        contract.APPOINTMENTS, [Wire().appointment_values(BST_APPOINTMENT)]
    ),
    "appointment-status-upload": lambda c: c.upload_rows(
        contract.APPOINTMENT_STATUSES,
        [Wire().appointment_status_values(AppointmentFlag(2, "Booked", "B", False))],
    ),
}
# What the original agent (json2csv 4.5.4 on Windows) sent for the same rows, byte for byte:
# quoted header, strings quoted, numbers and booleans bare, NULL empty, CRLF, no final EOL.
ORIGINAL_BYTES = {
    "patient-upload": (
        '"id","familyName","givenName","dateOfBirth","mobileNumber","emailAddress",'
        '"addressLine1","addressLine2","city","county","postcode","country"\r\n'
        '"101","Nuñez-O\'Brien","Siân Zoë","1975-12-31","07700 900001","zoe@example.invalid",'
        '"1 Heol y Frenhines","Flat ""B"", rear","Llandaff, Caerdydd","De Morgannwg","CF5 2YB",'
        '"UK"\r\n'
        '"102","Ó Súilleabháin","Aoife","1900-01-01",,,,,,,,"UK"'
    ).encode(),
    "appointment-upload": (
        b'"apptId","patientCode","apptDateTime","statusCode","status"\r\n'
        b'"9001",101,"2026-08-03T09:30:00.000Z",2,"Booked"'
    ),
    "appointment-status-upload": (
        b'"apptFlag","cancelled","character","description"\r\n2,false,"B","Booked"'
    ),
}


@pytest.mark.parametrize("endpoint", sorted(UPLOAD_CALLS))
def test_upload_bodies_are_the_original_agents_exact_bytes(
    flynotes_standin: StandinBackend, endpoint: str
) -> None:
    with _client(flynotes_standin) as client:
        UPLOAD_CALLS[endpoint](client)
    (request,) = flynotes_standin.received_for(endpoint)
    assert request.body == ORIGINAL_BYTES[endpoint]
    header = ",".join(f'"{name}"' for name in ISSUE_HEADERS[endpoint].split(","))
    assert request.body.startswith(header.encode("ascii") + b"\r\n")
    assert request.headers["content-length"] == str(len(ORIGINAL_BYTES[endpoint]))


def test_an_empty_chunk_is_not_posted(flynotes_standin: StandinBackend) -> None:
    with _client(flynotes_standin) as client:
        client.upload_rows(contract.PATIENTS, [])
    assert flynotes_standin.received == []


def test_patient_upload_csv_matches_the_contract_field_by_field(
    flynotes_standin: StandinBackend,
) -> None:
    with _client(flynotes_standin) as client:
        client.upload_rows(
            contract.PATIENTS,
            [Wire().patient_values(p) for p in (ACCENTED, NO_ADDRESS, ONLY_ADDRESS4)],
        )
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
            "dateOfBirth": "1900-01-01",  # R4's placeholder, sent as the original did
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


@pytest.mark.parametrize(
    ("wire", "dob", "submitted"),
    [
        (contract.ORIGINAL, "1900-01-01", "2026-07-14T08:05:00.000Z"),  # BST wall clock as Z
        (contract.IMPROVED, None, "2026-07-14T07:05:00Z"),  # times = "utc", unknown_dob
    ],
)
def test_patient_sync_json_matches_the_contract_with_nulls_for_missing_values(
    flynotes_standin: StandinBackend, wire: contract.WireSettings, dob: str | None, submitted: str
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
    with _client(flynotes_standin, wire=Wire(wire)) as client:
        client.sync_patient(NO_ADDRESS, questionnaire, "patch-7f")
        client.sync_patient(ACCENTED, None, "patch-80")
    first, second = flynotes_standin.received_for("patient-sync")
    assert first.headers["content-type"] == "application/json"
    assert first.json == {
        "patient": {
            "id": "102",
            "familyName": "Ó Súilleabháin",
            "givenName": "Aoife",
            "dateOfBirth": dob,
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
            "submissionTime": submitted,
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


@pytest.mark.parametrize(
    ("wire", "summer", "winter"),
    [
        (contract.ORIGINAL, "2026-08-03T09:30:00.000Z", "2026-12-03T16:00:00.000Z"),
        (contract.IMPROVED, "2026-08-03T08:30:00Z", "2026-12-03T16:00:00Z"),
    ],
)
def test_appointment_and_status_uploads_match_the_contract(
    flynotes_standin: StandinBackend, wire: contract.WireSettings, summer: str, winter: str
) -> None:
    appointments = [
        Appointment(9001, 101, datetime(2026, 8, 3, 9, 30), 2, "Booked"),
        Appointment(9002, 102, datetime(2026, 12, 3, 16, 0), 77, None),  # unknown flag
    ]
    flags = [
        AppointmentFlag(2, "Booked", "B", False),
        AppointmentFlag(4, "FTA, no call", "F", True),
    ]
    mapping = Wire(wire)
    with _client(flynotes_standin) as client:
        client.upload_rows(
            contract.APPOINTMENTS, [mapping.appointment_values(a) for a in appointments]
        )
        client.upload_rows(
            contract.APPOINTMENT_STATUSES, [mapping.appointment_status_values(f) for f in flags]
        )
    (appts,) = flynotes_standin.received_for("appointment-upload")
    (statuses,) = flynotes_standin.received_for("appointment-status-upload")
    assert appts.query == {"performUpsert": ["true"]}
    assert appts.rows == [
        {
            "apptId": "9001",
            "patientCode": "101",
            "apptDateTime": summer,
            "statusCode": "2",
            "status": "Booked",
        },
        {
            "apptId": "9002",
            "patientCode": "102",
            "apptDateTime": winter,
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
