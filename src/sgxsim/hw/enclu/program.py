"""[MODEL] The enclave program image: the bytes at ``BASE + OENTRY`` that the engine fetches and runs."""

from __future__ import annotations

import contextlib
import hashlib
import struct
from collections.abc import Mapping
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
#: The file name of program text that comes from no known source file.
_ANONYMOUS = "<enclave>"


def program_image(source: str) -> bytes:
    """The bytes a builder places at ``BASE + OENTRY``: magic, u32 LE length, UTF-8 source.

    [MODEL] The format the engine fetches and runs. Raises InvalidArgument for a non-str source
    or one that does not compile (so builders fail early rather than at EENTER).
    """
    if not isinstance(source, str):
        raise InvalidArgument(f"program source must be a str, got {type(source).__name__}")
    raw = source.encode()
    try:
        compile(raw, _ANONYMOUS, "exec")
    except (SyntaxError, ValueError) as exc:
        raise InvalidArgument(f"enclave program does not compile: {exc}") from exc
    return PROGRAM_MAGIC + struct.pack("<I", len(raw)) + raw


def _program_parts(src: str, files: Mapping[str, str]) -> list[tuple[str, str]]:
    """``src`` cut where a known source file's whole text sits: ``(text, filename)`` in order.

    A file's text (ending with a newline) counts where it starts a line; the text between such
    parts (linker constants, programs of no known file) is named ``<enclave>``. Of overlapping
    hits the earlier one is kept.
    """
    hits: list[tuple[int, str, str]] = []
    for text, filename in files.items():
        if not text.endswith("\n"):
            continue
        at = src.find(text)
        while at >= 0:
            if at == 0 or src[at - 1] == "\n":
                hits.append((at, text, filename))
            at = src.find(text, at + 1)
    parts: list[tuple[str, str]] = []
    pos = 0
    for at, text, filename in sorted(hits, key=lambda hit: (hit[0], -len(hit[1]))):
        if at < pos:
            continue
        if at > pos:
            parts.append((src[pos:at], _ANONYMOUS))
        parts.append((text, filename))
        pos = at + len(text)
    if pos < len(src):
        parts.append((src[pos:], _ANONYMOUS))
    return parts


def _compile(m: Machine, src: bytes) -> tuple[CodeType, ...] | None:
    """Compile a program's source once per SHA-256; None for source that is not a program.

    [MODEL] Debug information: where the program holds the whole text of a file in
    ``m.enclave_source_files`` (registered by the loader, as the SGX uRTS tells sgx-gdb which
    file an enclave came from), that part is compiled under the file's name and its own line
    numbers, so tracebacks and coverage name the file. The parts run one after another in the
    one program namespace, which is what running the whole text does: whether the source is a
    program at all is decided on the whole text, and a part that does not compile alone (a cut
    inside a string literal, say) makes the whole text one ``<enclave>`` part again.
    """
    key = hashlib.sha256(src).digest()
    cache = m.enclave_code_cache
    if key in cache:
        return cache[key]
    try:
        text = src.decode("utf-8")
        code: tuple[CodeType, ...] = (compile(text, _ANONYMOUS, "exec"),)
    except (SyntaxError, ValueError, UnicodeDecodeError):
        cache[key] = None
        return None
    parts = _program_parts(text, m.enclave_source_files)
    if any(filename != _ANONYMOUS for _, filename in parts):
        with contextlib.suppress(SyntaxError, ValueError):
            code = tuple(compile(part, filename, "exec") for part, filename in parts)
    cache[key] = code
    return code
