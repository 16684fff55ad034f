"""Authenticode signing and checking with osslsigncode (release side only; exe and MSI alike).

The signing identity comes from files named by the environment or by option (paths only): a
PEM certificate + key, or a PKCS#12 file. Its passphrase comes from a file
($R4AGENT_SIGN_PASSPHRASE_FILE) or the environment ($R4AGENT_SIGN_PASSPHRASE, handed to
osslsigncode through a private temporary file, `-readpass`): never argv, where other users of
the machine can read it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from updater.repo.programs import Runner, run_program
from updater.repo.repository import RepoError

ENV_CERT = "R4AGENT_SIGN_CERT"
ENV_KEY = "R4AGENT_SIGN_KEY"
ENV_PKCS12 = "R4AGENT_SIGN_PKCS12"
# names of environment variables, not secrets
ENV_PASSPHRASE_FILE = "R4AGENT_SIGN_PASSPHRASE_FILE"  # noqa: S105
ENV_PASSPHRASE = "R4AGENT_SIGN_PASSPHRASE"  # noqa: S105
ENV_TSA = "R4AGENT_SIGN_TSA"  # a time-stamping server URL (releases: always)


class SigningError(RepoError):
    """osslsigncode could not sign (no identity, a wrong passphrase, a broken file)."""


class UnsignedError(RepoError):
    """A file without a valid Authenticode signature (or osslsigncode missing to tell)."""


@dataclass(frozen=True, slots=True)
class SigningIdentity:
    cert: Path | None = None
    key: Path | None = None
    pkcs12: Path | None = None
    passphrase_file: Path | None = None
    passphrase: str | None = None  # from the environment only
    timestamp_url: str | None = None

    def __repr__(self) -> str:  # never the passphrase
        return f"SigningIdentity(cert={self.cert}, key={self.key}, pkcs12={self.pkcs12})"

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        cert: Path | None = None,
        key: Path | None = None,
        pkcs12: Path | None = None,
    ) -> SigningIdentity:
        def path(value: Path | None, name: str) -> Path | None:
            return value or (Path(environ[name]) if environ.get(name) else None)

        identity = cls(path(cert, ENV_CERT), path(key, ENV_KEY), path(pkcs12, ENV_PKCS12),
                       path(None, ENV_PASSPHRASE_FILE), environ.get(ENV_PASSPHRASE) or None,
                       environ.get(ENV_TSA) or None)
        if identity.pkcs12 is None and (identity.cert is None or identity.key is None):
            raise SigningError(f"no code-signing identity: give --sign-cert and --sign-key (or "
                               f"${ENV_CERT} / ${ENV_KEY}), or --sign-pkcs12 (${ENV_PKCS12})")
        return identity

    def describe(self) -> str:
        return str(self.pkcs12 or self.cert)


@contextmanager
def _passphrase_file(identity: SigningIdentity) -> Iterator[Path | None]:
    if identity.passphrase_file is not None or identity.passphrase is None:
        yield identity.passphrase_file
        return
    fd, name = tempfile.mkstemp(prefix="r4agent-sign-")  # 0600, removed at once after use
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(identity.passphrase + "\n")
        yield Path(name)
    finally:
        os.unlink(name)


def sign(path: Path, identity: SigningIdentity, run: Runner = run_program) -> Path:
    """Authenticode-sign `path` (an exe or an MSI) in place."""
    signed = path.with_name(f".signing-{path.name}")
    with _passphrase_file(identity) as secret:
        argv = ["osslsigncode", "sign", "-h", "sha256", "-n", "R4 agent"]
        if identity.pkcs12 is not None:
            argv += ["-pkcs12", str(identity.pkcs12)]
        else:
            argv += ["-certs", str(identity.cert), "-key", str(identity.key)]
        if secret is not None:
            argv += ["-readpass", str(secret)]
        if identity.timestamp_url:
            argv += ["-ts", identity.timestamp_url]
        done = run([*argv, "-in", str(path), "-out", str(signed)], 600)
    if done.returncode != 0 or not signed.is_file():
        signed.unlink(missing_ok=True)
        reason = "osslsigncode is not installed (apt-get install osslsigncode)" \
            if done.returncode == -1 else "osslsigncode sign failed (a wrong passphrase, or " \
            "the certificate and key do not match?)"
        raise SigningError(f"{path.name} not signed: {reason}")
    signed.replace(path)
    return path


def verify(path: Path, ca_file: Path | None, run: Runner = run_program) -> None:
    """Raise UnsignedError unless `path` carries a valid signature chaining to `ca_file` (or the
    system's CA certificates)."""
    argv = ["osslsigncode", "verify", "-in", str(path)]
    if ca_file is not None:
        argv += ["-CAfile", str(ca_file)]
    done = run(argv, 120)
    if done.returncode == -1 and "not found" in done.output:
        raise UnsignedError("osslsigncode is not installed, so the signature cannot be "
                            "checked: apt-get install osslsigncode")
    if done.returncode != 0:
        raise UnsignedError(f"{path} has no valid Authenticode signature (osslsigncode verify: "
                            f"{_why_unsigned(done.output)}): sign it (`release windows` does), "
                            "or pass --unsigned-test-build for a test repository")


def _why_unsigned(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if "No signature found" in line:
            return "no signature found"
    for line in lines:
        if line.startswith("Error:"):
            return line
    return lines[-1] if lines else "failed"
