"""Simulators for the updater tests: a real TUF repository on disk with throwaway keys, served over
loopback HTTP, and small real executables standing in for agent builds."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tuf.api.metadata import (  # type: ignore[attr-defined]
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Snapshot,
    TargetFile,
    Targets,
)
from tuf.api.serialization.json import JSONSerializer

from tests.fixtures.code_signing import make_signing_cert
from updater.agent_gate import InstalledGate
from updater.host import Host, OwnBuild
from updater.layout import Layout
from updater.policy import host_platform, target_app
from updater.repo import keys
from updater.repo.repository import ReleasePolicy, Repository, utc_now
from updater.state import CurrentPointer, PointerState, read_pointer, write_pointer
from updater.tuf_client import Limits

# the target names agents on this machine read (updater/policy.py)
HOST_APP = target_app(host_platform())

# The simulated agent: `--version` and `self-test` print its version; `run` behaves as baked in
# BEHAVIOUR (`self_test_broken`: its update path is broken; `legacy_cli`: no self-test command).
# It uses the real gate (updater.agent_gate.from_environment), like the agent's composition root.
AGENT_SCRIPT = """#!{python}
import json, os, sys
VERSION = {version!r}
BEHAVIOUR = json.loads({behaviour!r})
if sys.argv[1:] == ["self-test"] and BEHAVIOUR.get("legacy_cli"):
    sys.stderr.write("r4agent: error: argument COMMAND: invalid choice: 'self-test'\\n")
    sys.exit(2)
if sys.argv[1:] == ["self-test"] and BEHAVIOUR.get("self_test_broken"):
    sys.stderr.write("self-test failed: update path not importable: No module named 'bz2'\\n")
    sys.exit(1)
if sys.argv[1:] in (["--version"], ["self-test"]):
    if BEHAVIOUR.get("version_hang"):
        import time
        time.sleep(600)
    print(BEHAVIOUR.get("version_output", "r4agent " + VERSION))
    sys.exit(BEHAVIOUR.get("version_exit", 0))
base = os.environ.get("R4AGENT_INSTALL_BASE", "")
with open(os.path.join(base, "runs.log"), "a") as f:
    f.write(VERSION + "\\n")
if BEHAVIOUR.get("crash_before_confirm"):
    sys.exit(1)
from updater.agent_gate import from_environment
gate = from_environment(VERSION)
assert gate is not None, "not recognised as installed"
notice = gate.confirm_running()
if notice:  # what the agent reports to Rollbar
    with open(os.path.join(base, "notices.log"), "a") as f:
        f.write(notice + "\\n")
wanted_file = os.path.join(base, "wanted")
if os.path.exists(wanted_file):
    decision = gate.ensure(open(wanted_file).read().strip())
    with open(os.path.join(base, "decisions.log"), "a") as f:
        f.write(json.dumps([VERSION, decision.action.value, decision.reason]) + "\\n")
    if decision.action.value == "restart-into-new-version":
        sys.exit(4)
sys.exit(BEHAVIOUR.get("run_exit", 0))
"""


def make_bundle(root: Path, version: str, **behaviour: Any) -> Path:
    """A bundle folder holding one executable `r4agent` that simulates build `version`."""
    bundle = root / f"bundle-{version}-{len(list(root.glob('bundle-*')))}"
    bundle.mkdir(parents=True)
    exe = bundle / "r4agent"
    exe.write_text(AGENT_SCRIPT.format(python=sys.executable, version=version,
                                       behaviour=json.dumps(behaviour)))
    exe.chmod(0o755)
    # padding so archives are big enough for a patch to be worth it (like a real exe)
    (bundle / "payload.bin").write_bytes(bytes(range(256)) * 4096 + version.encode())
    return bundle


class FixedNow:
    """Injected repository clock (expiry dates are computed from it)."""

    def __init__(self) -> None:
        self.value: datetime | None = None

    def __call__(self) -> datetime:
        return self.value or utc_now()


# A real x86-64 ELF standing in for a Linux build (compiled by gcc at test time): `--version`
# and `self-test` print PRINTED, anything else exits 0.
_ELF_AGENT_C = r"""
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    if (argc == 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "self-test")))
        puts(PRINTED);
    return 0;
}
"""


def make_elf_bundle(root: Path, version: str, printed: str | None = None) -> Path:
    """A bundle holding one real ELF `r4agent` whose `--version` prints `r4agent VERSION`."""
    import subprocess

    bundle = root / f"elf-{version}-{len(list(root.glob('elf-*')))}"
    bundle.mkdir(parents=True)
    source = root / f"{bundle.name}.c"
    source.write_text(_ELF_AGENT_C)
    text = printed if printed is not None else f"r4agent {version}"
    subprocess.run(["gcc", "-O0", f"-DPRINTED={json.dumps(text)}", "-o",
                    str(bundle / "r4agent"), str(source)], check=True, timeout=120)
    return bundle


def real_windows_exe() -> Path:
    """A real PE32+ x86-64 exe with a version resource (FileVersion 1.1.0.14): pip's vendored
    distlib launcher, never committed here."""
    import pip._vendor.distlib as distlib

    return Path(distlib.__file__).parent / "t64.exe"


@dataclass(frozen=True)
class CodeSigning:
    cert: Path
    key: Path

    def sign(self, exe: Path, out: Path) -> Path:
        import subprocess

        subprocess.run(["osslsigncode", "sign", "-certs", str(self.cert), "-key", str(self.key),
                        "-h", "sha256", "-in", str(exe), "-out", str(out)],
                       check=True, capture_output=True, timeout=120)
        return out


def make_code_signing(root: Path) -> CodeSigning:
    """A throwaway self-signed code-signing certificate (openssl)."""
    key, cert = make_signing_cert(root)
    return CodeSigning(cert, key)


@dataclass
class RepoSim:
    root: Path
    repo: Repository
    now: FixedNow
    work: Path

    @property
    def repo_dir(self) -> Path:
        return self.repo.repo_dir

    platform: str | None = None  # the platform its builds are for (None: this machine's)

    def add(self, version: str, policy: ReleasePolicy | None = None, **behaviour: Any) -> None:
        self.repo.add_bundle(make_bundle(self.work, version, **behaviour), version, policy,
                             platform=self.platform)

    def snapshot_files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (self.repo_dir / "metadata").iterdir()}

    def restore_metadata(self, files: dict[str, bytes], names: list[str]) -> None:
        for name in names:
            (self.repo_dir / "metadata" / name).write_bytes(files[name])


def sign_with(md: Metadata[Any], key_path: Path) -> None:
    """Replace the signatures of `md` by one made with the private key file `key_path`."""
    md.signatures.clear()
    md.sign(keys.signer(key_path))


def write_metadata(sim: RepoSim, md: Metadata[Any], name: str) -> None:
    md.to_file(str(sim.repo_dir / "metadata" / name), JSONSerializer(compact=False))


def add_delegation(
    sim: RepoSim,
    role: str,
    paths: list[str],
    files: dict[str, bytes],
    *,
    write_files: bool = True,
    signed_by: Path | None = None,
) -> Path:
    """What only a holder of the offline targets key can do (the release side refuses it): the
    top-level targets delegate `paths` to a new role `role` with a key of its own (made here),
    which lists `files` (written under targets/ unless `write_files` is False); snapshot and
    timestamp are re-signed pinning both roles. `signed_by`: sign the delegated role with this
    key instead of the delegated one. Returns the delegated key's file."""
    key_path = sim.root / f"delegate-{role}"
    delegate = keys.generate_key_pair(key_path)
    expires = (utc_now() + timedelta(days=7)).replace(microsecond=0)
    top = sim.repo.load("targets")
    top.signed.version += 1
    top.signed.delegations = Delegations(
        keys={delegate.keyid: delegate},
        roles={role: DelegatedRole(role, [delegate.keyid], 1, False, paths=paths)})
    sign_with(top, sim.root / "keys" / "targets")
    write_metadata(sim, top, "targets.json")
    delegated = Metadata(Targets(version=1, expires=expires))
    for name, data in files.items():
        if write_files:
            (sim.repo_dir / "targets" / name).write_bytes(data)
        delegated.signed.targets[name] = TargetFile.from_data(name, data, ["sha256"])
    sign_with(delegated, signed_by or key_path)
    write_metadata(sim, delegated, f"{role}.json")
    snapshot = Metadata(Snapshot(
        version=sim.repo.load("snapshot").signed.version + 1, expires=expires,
        meta={"targets.json": MetaFile(top.signed.version), f"{role}.json": MetaFile(1)}))
    sign_with(snapshot, sim.root / "keys" / "snapshot")
    write_metadata(sim, snapshot, "snapshot.json")
    sim.repo.resign_timestamp()
    return key_path


@dataclass(frozen=True)
class ReleaseCli:
    """build/release.py's `main` on a repository at `repo` with throwaway keys in `keys` (one
    unencrypted folder); calling it runs one command line and returns its exit code."""

    release: Any  # the loaded build/release.py module
    repo: Path
    keys: Path

    def __call__(self, *args: str) -> int:
        code: int = self.release.main(["--repo", str(self.repo), "--keys", str(self.keys), *args])
        return code


def release_cli(release: Any, root: Path) -> ReleaseCli:
    """A fresh repository (`release.py init`) under `root`, driven through `release`'s CLI."""
    Repository.create_keys(root / "keys")
    cli = ReleaseCli(release, root / "repo", root / "keys")
    assert cli("init") == 0
    return cli


def make_repo(tmp: Path, start: datetime | None = None) -> RepoSim:
    """A fresh repository; `start` sets the repository clock (expiries count from it)."""
    keys = tmp / "keys"
    Repository.create_keys(keys)
    now = FixedNow()
    now.value = start
    repo = Repository(tmp / "repo", keys, now=now)
    repo.initialize()
    work = tmp / "bundles"
    work.mkdir()
    return RepoSim(tmp, repo, now, work)


def clone_repo(template: RepoSim, tmp: Path) -> RepoSim:
    """A private copy of a prepared repository (keys, metadata, targets, bundles)."""
    shutil.copytree(template.root, tmp)
    now = FixedNow()
    return RepoSim(tmp, Repository(tmp / "repo", tmp / "keys", now=now), now, tmp / "bundles",
                   template.platform)


class _Handler(SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        override = self.server.overrides.get(self.path)
        if override is not None:
            override(self)
            return
        super().do_GET()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[str]
    overrides: dict[str, Callable[[SimpleHTTPRequestHandler], None]]


@dataclass
class HttpRepo:
    url: str
    requests: list[str]
    overrides: dict[str, Callable[[SimpleHTTPRequestHandler], None]] = field(default_factory=dict)

    def fetched(self, suffix: str) -> bool:
        return any(r.endswith(suffix) for r in self.requests)


def serve(directory: Path) -> Iterator[HttpRepo]:
    def handler(*args: Any, **kwargs: Any) -> _Handler:
        return _Handler(*args, directory=str(directory), **kwargs)

    server = _Server(("127.0.0.1", 0), handler)
    server.requests = []
    server.overrides = {}
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield HttpRepo(f"http://127.0.0.1:{server.server_address[1]}", server.requests,
                       server.overrides)
    finally:
        server.shutdown()
        server.server_close()


def install_from_repo(sim: RepoSim, layout: Layout, version: str) -> None:
    install_from_repository(sim.repo, layout, version)


def install_from_repository(
    repo: Repository, layout: Layout, version: str, app: str = HOST_APP
) -> None:
    """Lay out `version` (its archive named for `app`) as if the updater had installed it:
    extracted folder, cached tar, pointer, trusted root."""
    import tarfile

    layout.ensure_dirs()
    archive = repo.repo_dir / "targets" / f"{app}-{version}.tar.gz"
    tar_bytes = gzip.decompress(archive.read_bytes())
    (layout.targets_dir / f"r4agent-{version}.tar").write_bytes(tar_bytes)
    dest = layout.version_dir(version)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    (layout.metadata_dir / "root.json").write_bytes(repo.root_bytes())
    write_pointer(layout.current_file,
                  CurrentPointer(version, None, PointerState.INSTALLED, 0, "test install"))


def gate(layout: Layout, running: str, url: str, sim: RepoSim,
         limits: Limits | None = None, root_seed: bytes | None = None) -> InstalledGate:
    seed = root_seed if root_seed is not None else sim.repo.root_bytes()
    return InstalledGate(layout, running, url, root_seed=seed, limits=limits)


def pointer_version(layout: Layout) -> str:
    pointer = read_pointer(layout.current_file)
    assert pointer is not None
    return pointer.version


def copy_repo(sim: RepoSim, dest: Path) -> Path:
    shutil.copytree(sim.repo_dir, dest)
    return dest


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll a real process's effect (a deadline for a hung run, not a timed assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        time.sleep(0.05)


def process_state(pid: int) -> tuple[bool, int]:
    """(still running, process group) from /proc; a zombie no-one reaps has stopped running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False, -1
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0] not in ("Z", "X"), int(fields[2])


def service_start(layout: Layout, own_exe: Path, own_version: str) -> CurrentPointer:
    """What the service does at every start (`Host.bootstrap` with the MSI's exe as `own`)."""
    pointer = Host(layout, own=OwnBuild(own_exe, own_version)).bootstrap()
    assert pointer is not None  # with an own build to fall back on there is always a choice
    return pointer
