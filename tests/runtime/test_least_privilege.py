"""The agent with the least privilege the backend may grant: SQS credentials whose policy allows
only ReceiveMessage + DeleteMessage (all the original agent used), on moto's server enforcing
IAM. Every other action is denied: its feature turns off with one report each, and the agent
carries on — commands delivered and deleted, poison reported and deleted without its body."""

from __future__ import annotations

import threading
from dataclasses import replace

from agent.commands import envelope
from agent.exit_codes import ExitCode
from agent.standin.r4_sample import CANARY_CODE
from tests.fixtures.sqs_iam import RestrictedSqs
from tests.runtime.conftest import Practice, eventually

HOUR = 3600.0


def test_credentials_allowing_only_receive_and_delete_degrade_features_never_fail(
    practice: Practice, restricted_sqs: RestrictedSqs
) -> None:
    admin = restricted_sqs.admin
    practice.sqs = admin
    practice.backend.sqs_queue_url = admin.queue_url
    practice.backend.sqs_region = admin.region
    practice.backend.set_credentials(
        restricted_sqs.agent_access_key_id,
        restricted_sqs.agent_secret_access_key,
        restricted_sqs.agent_session_token,
    )
    practice.config = replace(practice.config, sqs_endpoint_url=admin.endpoint_url)
    agent = practice.agent().start().polling()

    def denied() -> list[str]:
        return [
            str(c["action"])
            for _, c in agent.sink.exceptions
            if c.get("phase") == "least privilege"
        ]

    # a handler still running at a heartbeat tick: its extension is denied
    release = threading.Event()
    practice.backend.hold_next(1, until=release, endpoint="patient-sync")
    practice.send(envelope.encode(envelope.PatientSync(CANARY_CODE, "held")))
    eventually(lambda: "ChangeMessageVisibility" in denied(), 60)
    release.set()
    eventually(lambda: practice.queue_counts() == (0, 0), 60)

    for round_ in range(2):
        for i in range(3):
            practice.send(envelope.encode(envelope.PatientSync(CANARY_CODE, f"lp{round_}{i}")))
        practice.send('{"type": "patient-sync"')  # poison: no DLQ it may use
        expected = 1 + 3 * (round_ + 1)

        def delivered(n: int = expected) -> bool:
            return len(practice.backend.received_for("patient-sync")) == n

        eventually(delivered, 60)
        eventually(lambda: practice.queue_counts() == (0, 0), 60)

    assert practice.queue_counts(admin.dead_letter_queue_url) == (0, 0)  # nothing could go there
    actions = denied()
    assert sorted(actions) == sorted(set(actions))  # one report per action for the process
    assert {"GetQueueAttributes", "ChangeMessageVisibility"} <= set(actions)
    dropped = [c for _, c in agent.sink.exceptions if c.get("outcome") == "dead-lettered"]
    assert len(dropped) == 1  # the poison reported (rate-limited), deleted as the original did
    assert agent.stats("receive-failures") == 0
    agent.clock.advance(24 * HOUR)
    assert agent.wait() is ExitCode.END_OF_LIFE
