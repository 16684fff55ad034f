"""Error roots of the updater. Messages are safe to log and report (no secrets, no patient data).

`UpdateRefusedError`: policy or verification said no (bad hint, unlisted, revoked, below the floor,
metadata or target failed TUF verification). Retrying the same thing cannot help.
`UpdateUnavailableError`: transport or local resource trouble (network, disk full, a staged exe that
did not start). Worth trying again later. Neither ever changes the running version.
"""

from __future__ import annotations


class UpdateError(Exception):
    """Root of every error the updater raises on purpose."""


class UpdateRefusedError(UpdateError):
    pass


class VerificationError(UpdateRefusedError):
    """TUF metadata or a downloaded target failed verification (signatures, expiry, hashes)."""


class UpdateUnavailableError(UpdateError):
    pass


class DownloadFailedError(UpdateUnavailableError):
    pass


class StagingError(UpdateUnavailableError):
    """Extraction into the private staging folder failed (disk full, unsafe archive...)."""


class UnsafeArchiveError(UpdateRefusedError):
    """The (verified) archive holds absolute paths, `..`, links or devices."""


class SmokeTestError(UpdateUnavailableError):
    """The staged exe did not print exactly its version in time."""
