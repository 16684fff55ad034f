"""The change ledger: for each patient code and appointment id, the keyed digest of exactly the
values the backend last acknowledged (HTTP 2xx). One SQLite file in the data directory (WAL).

It holds integers and digests only: HMAC-SHA256 under a random per-install key kept in its own
file beside the config (`uploads-ledger.key`, readable by the service account only), so not
even a guess of a patient's name can be checked against it without that key.

A missing, damaged or foreign ledger (another install key, another R4 database, another
format) is replaced by an empty one, which makes the next pass of every table a full pass:
never a crash, never a skipped row. A failure while in use does the same (`reset`).
Digests are written only by `commit`, which the pass calls after its chunk's 2xx.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, Protocol

log = logging.getLogger(__name__)

LEDGER_FILENAME: Final = "uploads-ledger.sqlite3"
KEY_FILENAME: Final = "uploads-ledger.key"
FORMAT: Final = b"r4agent-ledger-1"
KINDS: Final = ("patients", "appointments")  # the tables that have digests
_KEY_BYTES: Final = 32


def row_digest(key: bytes, values: object) -> bytes:
    """HMAC-SHA256 of the values sent for one row (their repr: str/int/bool/None tuples have one
    spelling), so any change of a sent value, or of a `[contract]` setting that changes it,
    changes the digest."""
    return hmac.digest(key, repr(values).encode("utf-8", "surrogatepass"), "sha256")


class RowDigest:
    """`row_digest` for one key, about twice as fast: HMAC's inner and outer SHA-256 states
    are keyed once (RFC 2104) and copied per row (a pass digests every row it reads)."""

    def __init__(self, key: bytes) -> None:
        block = (
            key.ljust(64, b"\0")
            if len(key) <= 64
            else hashlib.sha256(key).digest().ljust(64, b"\0")
        )
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def __call__(self, values: object) -> bytes:
        inner = self._inner.copy()
        inner.update(repr(values).encode("utf-8", "surrogatepass"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def load_or_create_key(path: Path) -> bytes:
    """The install's ledger key: read from `path`, or a new random one written there (mode
    0600; on Windows the data folder's ACL applies, as to config.toml). A damaged file gets a
    new key, which makes the ledger foreign: a full pass. Raises OSError if it cannot write."""
    try:
        text = path.read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
        if len(key) == _KEY_BYTES:
            return key
        log.warning("the ledger key file is damaged: making a new key (full upload next)")
    except FileNotFoundError:
        pass
    except (OSError, ValueError, UnicodeDecodeError) as e:
        log.warning("the ledger key file is unreadable (%s): making a new key", type(e).__name__)
    key = secrets.token_bytes(_KEY_BYTES)
    temp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(key.hex())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return key


class Ledger(Protocol):
    """What a pass needs from the ledger. Never raises: a failure turns into `fresh` (a full
    pass) on the real one."""

    key: bytes

    def fresh(self, kind: str) -> bool:
        """True when the ledger knows nothing for `kind` it can vouch for (a full pass needed)."""
        ...

    def known(self, kind: str, after: int | None, up_to: int | None) -> dict[int, bytes]:
        """Digests of keys in (after, up_to]; None = unbounded on that side."""
        ...

    def commit(self, kind: str, digests: Sequence[tuple[int, bytes]]) -> None: ...

    def forget(self, kind: str, keys: Iterable[int]) -> None: ...

    def forget_after(self, kind: str, after: int | None) -> None:
        """Drop every key above `after` (all of them when None): rows gone from R4."""
        ...

    def full_pass_done(self, kind: str) -> None: ...

    def close(self) -> None: ...


class NoLedger:
    """No ledger (support commands, or the data directory is unusable): every pass is full."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key or secrets.token_bytes(_KEY_BYTES)

    def fresh(self, kind: str) -> bool:
        return True

    def known(self, kind: str, after: int | None, up_to: int | None) -> dict[int, bytes]:
        return {}

    def commit(self, kind: str, digests: Sequence[tuple[int, bytes]]) -> None:
        return None

    def forget(self, kind: str, keys: Iterable[int]) -> None:
        return None

    def forget_after(self, kind: str, after: int | None) -> None:
        return None

    def full_pass_done(self, kind: str) -> None:
        return None

    def close(self) -> None:
        return None


def _table(kind: str) -> str:
    if kind not in KINDS:  # table names come from this tuple only
        raise ValueError(f"no ledger table for {kind!r}")
    return f"digests_{kind}"


class SqliteLedger:
    """The real ledger. Thread-safe (one connection, one lock)."""

    def __init__(self, path: Path, key: bytes, source: str) -> None:
        self.path = path
        self.key = key
        # Stored as digests: the meta table says whose ledger this is without naming the server.
        self._check = hmac.digest(key, FORMAT, "sha256")
        self._source = hmac.digest(key, FORMAT + b"\0" + source.encode("utf-8"), "sha256")
        self._lock = threading.Lock()
        self._fresh: set[str] = set()
        self._db: sqlite3.Connection | None = None
        self._open()

    # -- opening ---------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            if self._try_open():
                return
            reason = "foreign"
        except sqlite3.Error as e:  # not a database, damaged, locked by another process
            reason = f"damaged ({type(e).__name__})"
        log.warning("the upload ledger is %s: starting a new one (full upload next)", reason)
        self._close_quietly()
        self._remove_files()
        try:
            self._create()
        except sqlite3.Error as e:
            log.warning(
                "cannot create the upload ledger (%s): every upload is full", type(e).__name__
            )
            self._close_quietly()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL: a power cut may lose the last commits, and
        return db  # a lost commit only makes a row look changed (sent again): never skipped

    def _try_open(self) -> bool:
        """True when the file exists and is ours; False when it is absent or foreign."""
        if not self.path.exists():
            self._create()
            return True
        self._db = self._connect()
        rows = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        if rows.get("check") != self._check or rows.get("source") != self._source:
            return False
        for kind in KINDS:
            self._db.execute(f"SELECT count(*) FROM {_table(kind)} WHERE key < 0").fetchone()  # noqa: S608
        self._db.execute("PRAGMA quick_check").fetchall()
        return True

    def _create(self) -> None:
        self._db = self._connect()
        self._db.execute("BEGIN")
        self._db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
        for kind in KINDS:
            self._db.execute(
                f"CREATE TABLE {_table(kind)} (key INTEGER PRIMARY KEY, digest BLOB NOT NULL)"
            )
        self._db.executemany(
            "INSERT INTO meta VALUES (?, ?)", [("check", self._check), ("source", self._source)]
        )
        self._db.execute("COMMIT")
        self._fresh = set(KINDS)

    def _close_quietly(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        self._db = None

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                self.path.with_name(self.path.name + suffix).unlink()

    def reset(self, error: BaseException) -> None:
        """A failure while in use: start again empty (every table's next pass is full)."""
        log.warning(
            "the upload ledger failed (%s): starting a new one (full upload next)",
            type(error).__name__,
        )
        self._close_quietly()
        try:
            self._remove_files()
            self._create()
        except (OSError, sqlite3.Error) as e:
            log.warning("cannot re-create the upload ledger (%s)", type(e).__name__)
            self._close_quietly()
        self._fresh = set(KINDS)

    # -- Ledger ------------------------------------------------------------------------------
    def fresh(self, kind: str) -> bool:
        with self._lock:
            return self._db is None or kind in self._fresh

    def full_pass_done(self, kind: str) -> None:
        with self._lock:
            self._fresh.discard(kind)

    def known(self, kind: str, after: int | None, up_to: int | None) -> dict[int, bytes]:
        sql = f"SELECT key, digest FROM {_table(kind)} WHERE key > ? AND key <= ?"  # noqa: S608
        low = -(2**63) if after is None else after
        high = 2**63 - 1 if up_to is None else up_to
        with self._lock:
            if self._db is None:
                return {}
            try:
                return dict(self._db.execute(sql, (low, high)).fetchall())
            except sqlite3.Error as e:
                self.reset(e)
                return {}

    def commit(self, kind: str, digests: Sequence[tuple[int, bytes]]) -> None:
        sql = f"INSERT OR REPLACE INTO {_table(kind)} (key, digest) VALUES (?, ?)"  # noqa: S608
        self._write(sql, digests)

    def forget(self, kind: str, keys: Iterable[int]) -> None:
        sql = f"DELETE FROM {_table(kind)} WHERE key = ?"  # noqa: S608
        self._write(sql, [(k,) for k in keys])

    def forget_after(self, kind: str, after: int | None) -> None:
        sql = f"DELETE FROM {_table(kind)} WHERE key > ?"  # noqa: S608
        self._write(sql, [(-(2**63) if after is None else after,)])

    def _write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        if not rows:
            return
        with self._lock:
            if self._db is None:
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self.reset(e)

    def size_bytes(self) -> int:
        """The ledger's size on disk (file and WAL), for the benchmark and `status`."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += self.path.with_name(self.path.name + suffix).stat().st_size
        return total

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._close_quietly()


def open_ledger(data_dir: Path, source: str) -> Ledger:
    """The data directory's ledger for R4 database `source` (its identity: server and database
    name), or NoLedger when the directory cannot hold one. Never raises."""
    try:
        key = load_or_create_key(data_dir / KEY_FILENAME)
    except OSError as e:
        log.warning(
            "no upload ledger: cannot keep its key (%s): every upload is full", type(e).__name__
        )
        return NoLedger()
    return SqliteLedger(data_dir / LEDGER_FILENAME, key, source)


def source_identity(*parts: str | None) -> str:
    """A stable identity of the R4 database from its connection settings (never logged)."""
    return hashlib.sha256("\0".join(p or "" for p in parts).encode("utf-8")).hexdigest()
