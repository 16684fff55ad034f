"""Shared simulators, one plugin module per real part they stand in for."""

pytest_plugins = [
    "tests.fixtures.r4_database",
    "tests.fixtures.flynotes_backend",
    "tests.fixtures.sqs_server",
    "tests.fixtures.sqs_iam",
    "tests.fixtures.rollbar_endpoint",
    "tests.fixtures.canary_guard",
]
