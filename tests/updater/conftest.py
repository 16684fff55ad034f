"""Fixtures for the updater tests: a signed repository with 1.0.0, 1.1.0 and 1.2.0 served over
loopback HTTP, and an installed layout running 1.0.0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.updater.support import (
    HttpRepo,
    RepoSim,
    clone_repo,
    install_from_repo,
    make_repo,
    serve,
)
from updater.layout import Layout


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> RepoSim:
    sim = make_repo(tmp_path_factory.mktemp("template") / "release")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        sim.add(version)
    return sim


@pytest.fixture
def sim(tmp_path: Path, template_repo: RepoSim) -> RepoSim:
    return clone_repo(template_repo, tmp_path / "release")


@pytest.fixture
def http_repo(sim: RepoSim) -> Iterator[HttpRepo]:
    yield from serve(sim.repo_dir)


@pytest.fixture
def layout(tmp_path: Path, sim: RepoSim) -> Layout:
    layout = Layout(tmp_path / "ProgramData")
    install_from_repo(sim, layout, "1.0.0")
    return layout


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
