"""`r4-cp1252`: Windows-1252 as Windows and SQL Server decode it, every byte defined.

Python's cp1252 leaves 0x81, 0x8D, 0x8F, 0x90 and 0x9D undefined and raises on them.
Windows (MultiByteToWideChar, and so SQL Server converting varchar to nvarchar) maps each of
them to the C1 control with the same number (U+0081 …). R4's varchar columns can hold such a
byte (text pasted from elsewhere), and one byte must neither stop a bulk upload nor put the
row's bytes into an exception, so R4's varchar text is decoded with this codec.
"""

from __future__ import annotations

import codecs
from encodings import cp1252
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # collections.abc.Buffer is 3.12+; the stubs know it for 3.11
    from typing_extensions import Buffer

NAME = "r4-cp1252"
UNDEFINED_IN_PYTHON = (0x81, 0x8D, 0x8F, 0x90, 0x9D)

DECODING_TABLE = "".join(
    chr(byte) if byte in UNDEFINED_IN_PYTHON else char
    for byte, char in enumerate(cp1252.decoding_table)
)
_ENCODING_TABLE = codecs.charmap_build(DECODING_TABLE)


def _encode(text: str, errors: str = "strict") -> tuple[bytes, int]:
    return codecs.charmap_encode(text, errors, _ENCODING_TABLE)


def _decode(data: Buffer, errors: str = "strict") -> tuple[str, int]:
    return codecs.charmap_decode(data, errors, DECODING_TABLE)


def _search(name: str) -> codecs.CodecInfo | None:
    if name.replace("_", "-") != NAME:
        return None
    return codecs.CodecInfo(_encode, _decode, name=NAME)


def register() -> str:
    """Make `r4-cp1252` known to Python's codec registry (once); returns its name."""
    try:
        codecs.lookup(NAME)
    except LookupError:
        codecs.register(_search)
    return NAME
