"""Benchmark: update size and apply time for a one-line change.

    python bench/bench_update.py [--exe-a PATH --exe-b PATH] [--rounds 3]

Without `--exe-a/--exe-b` it freezes two real builds with build/freeze.py that differ by one line
(the baked version, 1.0.0 vs 1.0.1; reproducible: SOURCE_DATE_EPOCH, PYTHONHASHSEED=0). It then
publishes both to a throwaway TUF repository served on loopback and measures:

- full archive size vs patch size (goal: patch <= 1 % of the full archive);
- apply time via the patch and via the full archive — the whole `InstalledGate.ensure` (goal:
  <= 3 s for a 15 MB build on loopback) — and, through the install observer (the time each
  state is persisted), its phases: refresh (TUF metadata fetched + verified, route decided),
  download + verify (target fetched and hash-checked, patch applied and its result hash-checked,
  tar unpacked and cached), stage (safe extraction), smoke test (`self-test` of the staged exe),
  switch (rename + pointer), tidy (pruning). The sha256 cost inside "download + verify" is shown
  on its own line.

Prints measurements and goals; it never fails on a missed goal (that is a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from builds import bundle_of, freeze  # noqa: E402

from tests.updater.support import serve  # noqa: E402
from updater.agent_gate import InstalledGate  # noqa: E402
from updater.gate import GateAction  # noqa: E402
from updater.layout import Layout  # noqa: E402
from updater.repo.repository import Repository  # noqa: E402
from updater.state import (  # noqa: E402
    CurrentPointer,
    InstallRecord,
    PointerState,
    write_pointer,
)

PATCH_GOAL = 0.01
APPLY_GOAL_S = 3.0


def install(repo: Repository, layout: Layout, version: str, with_tar: bool) -> None:
    if layout.base.exists():
        shutil.rmtree(layout.base)
    layout.ensure_dirs()
    archive = repo.targets_dir / f"r4agent-{version}.tar.gz"
    if with_tar:
        (layout.targets_dir / f"r4agent-{version}.tar").write_bytes(
            gzip.decompress(archive.read_bytes()))
    with tarfile.open(archive) as tar:
        tar.extractall(layout.version_dir(version), filter="data")
    (layout.metadata_dir / "root.json").write_bytes(repo.root_bytes())
    write_pointer(layout.current_file, CurrentPointer(version, None, PointerState.INSTALLED))


PHASES = (("checked", "refresh"), ("downloaded", "download + verify"), ("staged", "stage"),
          ("smoke_tested", "smoke test"), ("switched", "switch"), ("end", "tidy"))


class PhaseClock:
    """Install observer: when each state was persisted."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}

    def __call__(self, record: InstallRecord) -> None:
        self.marks[record.state.value] = time.perf_counter()

    def phases(self, start: float, end: float) -> list[tuple[str, float]]:
        marks, out, last = {**self.marks, "end": end}, [], start
        for state, label in PHASES:
            out.append((label, marks[state] - last))
            last = marks[state]
        return out


def hashing_s(*blobs: bytes) -> float:
    t0 = time.perf_counter()
    for blob in blobs:
        hashlib.sha256(blob).hexdigest()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exe-a", type=Path)
    parser.add_argument("--exe-b", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-update-"))
    try:
        repo = Repository(work / "repo", work / "keys")
        Repository.create_keys(work / "keys")
        repo.initialize()
        root = work / "root.json"
        root.write_bytes(repo.root_bytes())
        versions = ("1.0.0", "1.0.1")
        if args.exe_a and args.exe_b:
            exe_a, exe_b = args.exe_a, args.exe_b
            print("using given builds (their --version must print 1.0.0 and 1.0.1)")
        else:
            t0 = time.perf_counter()
            exe_a = freeze(versions[0], work / "build-a", trusted_root=root)
            exe_b = freeze(versions[1], work / "build-b", trusted_root=root)
            print(f"froze two builds in {time.perf_counter() - t0:.0f} s")
        repo.add_bundle(bundle_of(exe_a, work / "bundle-a"), versions[0])
        t0 = time.perf_counter()
        archive_name, patch_name = repo.add_bundle(bundle_of(exe_b, work / "bundle-b"),
                                                   versions[1])
        diff_s = time.perf_counter() - t0
        archive = (repo.targets_dir / archive_name).read_bytes()
        patch_bytes = (repo.targets_dir / patch_name).read_bytes()
        full, patch = len(archive), len(patch_bytes)
        ratio = patch / full
        print(f"exe size:          {exe_b.stat().st_size / 1e6:8.2f} MB")
        print(f"full archive:      {full / 1e6:8.2f} MB")
        print(f"patch:             {patch / 1e3:8.1f} KB  ({ratio:.3%} of the full archive; "
              f"goal <= {PATCH_GOAL:.0%}: {'met' if ratio <= PATCH_GOAL else 'MISSED'})")
        print(f"release-side diff: {diff_s:8.2f} s")
        layout = Layout(work / "pd")
        tar = gzip.decompress(archive)
        hashed = {"patch": hashing_s(patch_bytes, tar), "full archive": hashing_s(archive)}
        for http in serve(repo.repo_dir):
            for route, with_tar in (("patch", True), ("full archive", False)):
                runs: list[tuple[float, list[tuple[str, float]]]] = []
                for _ in range(args.rounds):
                    install(repo, layout, versions[0], with_tar)
                    phases = PhaseClock()
                    gate = InstalledGate(layout, versions[0], http.url,
                                         root_seed=repo.root_bytes(), observer=phases)
                    t0 = time.perf_counter()
                    decision = gate.ensure(versions[1])
                    t1 = time.perf_counter()
                    assert decision.action is GateAction.RESTART_INTO_NEW_VERSION, decision.reason
                    assert route in decision.reason, decision.reason
                    runs.append((t1 - t0, phases.phases(t0, t1)))
                best, best_phases = min(runs, key=lambda r: r[0])
                verdict = "met" if best <= APPLY_GOAL_S else "MISSED"
                print(f"apply via {route:13s} best {best:6.2f} s of {args.rounds} "
                      f"(goal <= {APPLY_GOAL_S:.0f} s for a 15 MB build: {verdict})")
                for label, seconds in best_phases:
                    print(f"    {label:18s} {seconds:6.3f} s")
                print(f"    {'(sha256 in it)':18s} {hashed[route]:6.3f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
