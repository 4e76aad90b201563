"""[MODEL] The enclave program image: the bytes at ``BASE + OENTRY`` that the engine fetches and runs."""

from __future__ import annotations

import hashlib
import struct
from types import CodeType
from typing import TYPE_CHECKING

from sgxsim.errors import InvalidArgument

if TYPE_CHECKING:
    from sgxsim.hw.machine import Machine

__all__ = [
    "PROGRAM_HEADER_SIZE",
    "PROGRAM_MAGIC",
    "program_image",
]


#: [MODEL] Magic opening an enclave program image (format version 1).
PROGRAM_MAGIC = b"SGXPY\x00\x00\x01"
#: Magic + u32 little-endian source length.
PROGRAM_HEADER_SIZE = len(PROGRAM_MAGIC) + 4


def program_image(source: str) -> bytes:
    """The bytes a builder places at ``BASE + OENTRY``: magic, u32 LE length, UTF-8 source.

    [MODEL] The format the engine fetches and runs. Raises InvalidArgument for a non-str source
    or one that does not compile (so builders fail early rather than at EENTER).
    """
    if not isinstance(source, str):
        raise InvalidArgument(f"program source must be a str, got {type(source).__name__}")
    raw = source.encode()
    try:
        compile(raw, "<enclave>", "exec")
    except (SyntaxError, ValueError) as exc:
        raise InvalidArgument(f"enclave program does not compile: {exc}") from exc
    return PROGRAM_MAGIC + struct.pack("<I", len(raw)) + raw


def _compile(m: Machine, src: bytes) -> CodeType | None:
    """Compile a program's source once per SHA-256; None for source that is not a program."""
    key = hashlib.sha256(src).digest()
    cache = m.enclave_code_cache
    if key in cache:
        return cache[key]
    code: CodeType | None
    try:
        code = compile(src.decode("utf-8"), "<enclave>", "exec")
    except (SyntaxError, ValueError, UnicodeDecodeError):
        code = None
    cache[key] = code
    return code
