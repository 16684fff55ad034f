"""Refuse a bundle an agent could not run, before anything is signed (release side only).

A bundle is the folder `release`/`add` archive as one release. It must hold exactly one file:

    r4agent.exe   Windows: a PE32+ for x86-64 whose version resource (VS_FIXEDFILEINFO, the
                  `filevers` build/r4agent.spec writes; read from the file, never run) is the
                  release's X.Y.Z, with a valid Authenticode signature (`osslsigncode verify`)
                  unless it is an unsigned test build
    r4agent       Linux: an x86-64 ELF whose `--version` prints `r4agent X.Y.Z`

Each refusal says why and what to do next. The checks that run a program (`osslsigncode`, the
Linux exe) go through one injected `Runner` (updater/repo/programs.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from updater.policy import LINUX, WINDOWS, parse_version
from updater.repo import authenticode
from updater.repo.programs import Runner, run_program
from updater.repo.repository import RepoError

EXE_NAMES = {"r4agent.exe": WINDOWS, "r4agent": LINUX}
_PE32_PLUS = 0x20B
_AMD64 = 0x8664
_ELF_X86_64 = 62


class BundleRefused(RepoError):
    """The bundle is not the one build an agent of its platform could run."""


@dataclass(frozen=True, slots=True)
class CheckedBundle:
    platform: str
    exe: Path
    signed: bool  # an Authenticode signature was verified (Windows)


def check_bundle(
    bundle: Path,
    version: str,
    *,
    platform: str | None = None,
    unsigned_test_build: bool = False,
    ca_file: Path | None = None,
    run: Runner = run_program,
) -> CheckedBundle:
    """The bundle's platform and exe, or BundleRefused. `platform`: the one expected (None:
    whichever the exe is). `ca_file`: the CA bundle osslsigncode verifies the signer against
    (default: the system's)."""
    parse_version(version)
    if not bundle.is_dir():
        raise BundleRefused(f"bundle {bundle} is not a folder: give the folder build/freeze.py "
                            "--out wrote")
    entries = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*"))
    if not entries:
        raise BundleRefused(f"bundle {bundle} is empty: build it first (build/freeze.py "
                            f"--version {version} --out DIR, or `release windows`)")
    if len(entries) != 1 or entries[0] not in EXE_NAMES or not (bundle / entries[0]).is_file():
        shown = ", ".join(entries[:8]) + (" …" if len(entries) > 8 else "")
        raise BundleRefused(f"bundle {bundle} must hold exactly one exe, r4agent.exe (Windows) "
                            f"or r4agent (Linux); it holds: {shown}. Freeze into an empty folder")
    exe = bundle / entries[0]
    found = EXE_NAMES[entries[0]]
    if platform is not None and found != platform:
        raise BundleRefused(f"bundle {bundle} holds {entries[0]}, a {found} build, not "
                            f"{platform}: {_platform_hint(platform)}")
    head = exe.read_bytes()[:64]
    if found == WINDOWS:
        if head[:4] == b"\x7fELF":
            raise BundleRefused(f"{exe} is a Linux ELF named .exe, not a Windows build: "
                                "freeze under Wine (`release windows`)")
        _check_pe(exe, version)
        if not unsigned_test_build:
            _check_signature(exe, ca_file, run)
        return CheckedBundle(WINDOWS, exe, not unsigned_test_build)
    _check_elf(exe, head, version, run)
    return CheckedBundle(LINUX, exe, False)


def _platform_hint(platform: str) -> str:
    if platform == WINDOWS:
        return "Windows releases are frozen under Wine (`release windows --version X`)"
    return "a Linux test build is frozen on Linux (build/freeze.py)"


def _check_pe(exe: Path, version: str) -> None:
    import pefile  # the release side only

    try:
        pe = pefile.PE(str(exe), fast_load=True)
        pe.parse_data_directories(
            directories=[pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_RESOURCE"]])
    except pefile.PEFormatError as e:
        raise BundleRefused(f"{exe} is not a Windows executable ({e}): freeze it with "
                            "`release windows`") from e
    try:
        if pe.OPTIONAL_HEADER.Magic != _PE32_PLUS or pe.FILE_HEADER.Machine != _AMD64:
            raise BundleRefused(
                f"{exe} is not a 64-bit x86 Windows build (PE magic {pe.OPTIONAL_HEADER.Magic:#x}"
                f", machine {pe.FILE_HEADER.Machine:#x}); the fleet runs 64-bit Windows: freeze "
                "with the 64-bit Windows Python (`release windows`)")
        infos = getattr(pe, "VS_FIXEDFILEINFO", None) or []
        if not infos:
            raise BundleRefused(f"{exe} carries no version resource, so it was not built by "
                                "build/freeze.py (its spec writes one): rebuild it")
        info = infos[0]
        embedded = (f"{info.FileVersionMS >> 16}.{info.FileVersionMS & 0xFFFF}."
                    f"{info.FileVersionLS >> 16}")
    finally:
        pe.close()
    if embedded != version:
        raise BundleRefused(f"{exe} is version {embedded}, not --version {version}: rebuild it "
                            f"with --version {version}, or release it as {embedded}")


def _check_signature(exe: Path, ca_file: Path | None, run: Runner) -> None:
    try:
        authenticode.verify(exe, ca_file, run)
    except authenticode.UnsignedError as e:
        raise BundleRefused(str(e)) from e


def _check_elf(exe: Path, head: bytes, version: str, run: Runner) -> None:
    if head[:4] != b"\x7fELF":
        what = "a Windows executable" if head[:2] == b"MZ" else "not an executable"
        raise BundleRefused(f"{exe} is {what}, not a Linux ELF build: a Windows build is "
                            "named r4agent.exe")
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    if head[4] != 2 or machine != _ELF_X86_64:
        raise BundleRefused(f"{exe} is not a 64-bit x86 ELF (class {head[4]}, machine "
                            f"{machine}): freeze it on x86-64 Linux")
    done = run([str(exe), "--version"], 120)
    printed = done.output.strip()
    if done.returncode != 0 or printed != f"r4agent {version}":
        shown = printed[-200:] if printed.isprintable() else repr(printed[-200:])
        raise BundleRefused(f"{exe} --version printed {shown!r} (exit {done.returncode}), not "
                            f"'r4agent {version}': rebuild it with --version {version}")
