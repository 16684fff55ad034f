"""Release key files: securesystemslib 0.x's ed25519 JSON key files, read and written here.

Every release key made before encryption is in that format (the tuf-4-era release tool wrote it
through `securesystemslib.interface`, as tufup does), and securesystemslib 1.x dropped the module
that read it; so this keeps the format and signs with securesystemslib 1.x's `CryptoSigner`
(pyca/cryptography: the release side only, never frozen into the agent).

    <name>      {"keytype": "ed25519", "scheme": "ed25519", "keyid": ID,
                 "keyid_hash_algorithms": ["sha256", "sha512"],
                 "keyval": {"public": HEX, "private": HEX}}              mode 0600
             or, encrypted with a passphrase (the offline keys `release.py init` makes):
                {... "keyval": {"public": HEX},
                 "encrypted_private": "-----BEGIN ENCRYPTED PRIVATE KEY-----..."}
                 (PKCS#8, pyca/cryptography's best available encryption)   mode 0600
    <name>.pub  the same without "keyid" and the private part

ID is the sha256 of the canonical JSON of the public file's content, the keyid securesystemslib
0.x gave the key (and so the one in every root.json made since); an encrypted key gets its keyid
the same way, so `keyid_of` finds the key a role needs without decrypting anything.
securesystemslib 0.x's own encrypted files (not JSON) are refused: no release key was ever
encrypted in that format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

from updater.state import write_bytes_atomic

_ED25519 = "ed25519"
# what securesystemslib 0.x put into every key file (and so into its keyids)
_KEYID_HASH_ALGORITHMS = ["sha256", "sha512"]


class KeyFileError(Exception):
    """A key file that is missing, unreadable or not an ed25519 key."""


class WrongPassphraseError(KeyFileError):
    """An encrypted key file the passphrase given does not open."""


# asks for the passphrase of the encrypted key files (once; the caller caches it)
Passphrase = Callable[[], str]


def _public_dict(public_hex: str) -> dict[str, Any]:
    return {"keytype": _ED25519, "scheme": _ED25519,
            "keyid_hash_algorithms": list(_KEYID_HASH_ALGORITHMS),
            "keyval": {"public": public_hex}}


def _keyid(public: dict[str, Any]) -> str:
    canonical = encode_canonical(public)
    assert canonical is not None  # None only when it writes to an output function
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _key(public: dict[str, Any]) -> SSlibKey:
    return SSlibKey(_keyid(public), _ED25519, _ED25519, {"public": public["keyval"]["public"]})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"key file {path.name} not readable") from e
    try:
        data = json.loads(text)
    except ValueError as e:  # securesystemslib 0.x encrypted files are not JSON
        raise KeyFileError(f"key file {path.name} is not an unencrypted JSON key") from e
    if not isinstance(data, dict) or data.get("keytype") != _ED25519 \
            or data.get("scheme") != _ED25519 or not isinstance(data.get("keyval"), dict):
        raise KeyFileError(f"key file {path.name} is not an ed25519 key")
    return data


def _hex_bytes(value: object, what: str, path: Path) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise KeyFileError(f"key file {path.name}: {what} is not a 32-byte hex string")
    return raw


def public_key(path: Path) -> SSlibKey:
    """The public key of `path` (a `.pub` file), with its securesystemslib 0.x keyid."""
    data = _read_json(path)
    public_hex = _hex_bytes(data["keyval"].get("public"), "public key", path).hex()
    return _key(_public_dict(public_hex))


def keyid_of(path: Path) -> str:
    """The keyid of the private key file `path`, read from its public part (nothing decrypted)."""
    data = _read_json(path)
    public_hex = _hex_bytes(data["keyval"].get("public"), "public key", path).hex()
    return _keyid(_public_dict(public_hex))


def is_encrypted(path: Path) -> bool:
    return "encrypted_private" in _read_json(path)


def signer(path: Path, passphrase: Passphrase | None = None) -> CryptoSigner:
    """A signer for the private key file `path` (`passphrase` opens an encrypted one). Raises
    KeyFileError if it is none, WrongPassphraseError, or KeyFileError if its public half does
    not belong to its private half."""
    data = _read_json(path)
    if "encrypted_private" in data:
        private = _decrypt(path, data["encrypted_private"], passphrase)
    else:
        seed = _hex_bytes(data["keyval"].get("private"), "private key", path)
        private = Ed25519PrivateKey.from_private_bytes(seed)
    public_hex = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    if data["keyval"].get("public") != public_hex:
        raise KeyFileError(f"key file {path.name}: public and private key do not match")
    return CryptoSigner(private, _key(_public_dict(public_hex)))


def _decrypt(path: Path, pem: object, passphrase: Passphrase | None) -> Ed25519PrivateKey:
    if passphrase is None:
        raise KeyFileError(f"key file {path.name} is encrypted and no passphrase was given")
    if not isinstance(pem, str):
        raise KeyFileError(f"key file {path.name}: encrypted_private is not a PEM string")
    try:
        private = load_pem_private_key(pem.encode("ascii"), passphrase().encode("utf-8"))
    except ValueError as e:  # pyca says "Bad decrypt. Incorrect password?" and the like
        raise WrongPassphraseError(f"the passphrase does not open key file {path.name}") from e
    except (TypeError, UnicodeError) as e:
        raise KeyFileError(f"key file {path.name}: encrypted_private not readable") from e
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"key file {path.name} is not an ed25519 key")
    return private


def generate_key_pair(path: Path, passphrase: str | None = None) -> SSlibKey:
    """A new ed25519 key: `path` (private, 0600; encrypted with `passphrase` if given) and
    `path`.pub, in the format above."""
    private = Ed25519PrivateKey.generate()
    public = _public_dict(
        private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex())
    keyid = _keyid(public)
    keyval: dict[str, Any] = {"public": public["keyval"]["public"]}
    private_data: dict[str, Any] = {"keytype": _ED25519, "scheme": _ED25519, "keyid": keyid,
                                    "keyid_hash_algorithms": list(_KEYID_HASH_ALGORITHMS),
                                    "keyval": keyval}
    if passphrase is None:
        keyval["private"] = private.private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
    else:
        if not passphrase:
            raise KeyFileError("an empty passphrase encrypts nothing")
        private_data["encrypted_private"] = private.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8,
            BestAvailableEncryption(passphrase.encode("utf-8"))).decode("ascii")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path.with_name(path.name + ".pub"), json.dumps(public).encode("utf-8"))
    write_bytes_atomic(path, json.dumps(private_data).encode("utf-8"))
    return _key(public)
