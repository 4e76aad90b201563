"""Known-answer MRENCLAVE vectors (tests/vectors/mrenclave.json) against sgxsim.hw.crypto.Measurement.

The vectors come from tools/gen_mrenclave_vectors.py, a standalone implementation of the published
algorithm (kernel selftest sigstruct.c, Gramine sgx_sign.py, Intel sign_tool) that imports nothing
from sgxsim. The page-data descriptors are expanded here by this file's own code, so neither side
shares code with the other.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from sgxsim.hw.crypto import Measurement

ROOT = pathlib.Path(__file__).resolve().parents[2]
VECTORS_FILE = ROOT / "tests" / "vectors" / "mrenclave.json"
GENERATOR = ROOT / "tools" / "gen_mrenclave_vectors.py"
DOC = json.loads(VECTORS_FILE.read_text())
VECTORS: list[dict[str, Any]] = DOC["vectors"]


def page_data(descriptor: str, length: int) -> bytes:
    """Expand a page-data descriptor (grammar documented in the JSON's page_data_descriptors)."""
    kind, _, arg = descriptor.partition(":")
    if descriptor == "zero":
        return b"\0" * length
    if kind == "fill":
        return bytes((int(arg, 16),)) * length
    if kind == "pattern":
        unit = bytes.fromhex(arg)
        return (unit * -(-length // len(unit)))[:length]
    if kind == "hex":
        return bytes.fromhex(arg).ljust(length, b"\0")
    if kind == "sha256-counter":
        blocks = (hashlib.sha256(arg.encode() + struct_u32(i)).digest() for i in range(-(-length // 32)))
        return b"".join(blocks)[:length]
    if kind == "fields":
        buf = bytearray(length)
        for spec in arg.split(";"):
            place, value = spec.split("=")
            off, width = (int(x, 0) for x in place.split("/"))
            buf[off : off + width] = int(value, 0).to_bytes(width, "little")
        return bytes(buf)
    raise AssertionError(f"unknown descriptor {descriptor}")


def struct_u32(i: int) -> bytes:
    return i.to_bytes(4, "little")


def pages_of(vector: dict[str, Any]) -> Iterator[tuple[int, int, bytes, bool]]:
    for run in vector["pages"]:
        offset, flags, count = int(run["offset"], 16), int(run["flags"], 16), run["count"]
        measured = run["measured"]
        data = page_data(run["data"], count * 4096) if measured else b""
        for i in range(count):
            yield (
                offset + i * 4096,
                flags,
                data[i * 4096 : (i + 1) * 4096] if measured else b"\0" * 4096,
                measured,
            )


def test_vector_file_has_the_required_layouts() -> None:
    names = [v["name"] for v in VECTORS]
    assert len(names) >= 3
    assert len(set(names)) == len(names)
    assert "linux-selftest-test_encl" in names
    for vector in VECTORS:
        assert vector["provenance"].strip()
        assert len(bytes.fromhex(vector["mrenclave"])) == 32
        assert set(vector) >= {"name", "provenance", "size", "ssa_frame_size", "pages", "mrenclave"}
    assert "imports nothing from sgxsim" in DOC["generator"]


def test_selftest_layout_matches_the_kernel_loader() -> None:
    vector = next(v for v in VECTORS if v["name"] == "linux-selftest-test_encl")
    pages = list(pages_of(vector))
    # Two TCS pages at 0 and 0x1000 with flags PT_TCS << 8 only, measured.
    assert [(off, flags, measured) for off, flags, _, measured in pages[:2]] == [
        (0, 0x100, True),
        (0x1000, 0x100, True),
    ]
    # Code R|X and data R|W measured; exactly one unmeasured R|W heap page, last.
    assert {flags for _, flags, _, m in pages[2:-1]} == {0x205, 0x203}
    assert all(m for *_, m in pages[:-1])
    assert pages[-1][1:] == (0x203, b"\0" * 4096, False)
    size = int(vector["size"], 16)
    image_end = pages[-1][0] + 4096
    assert size >= image_end and size & (size - 1) == 0 and size // 2 < max(image_end, 0x1000 + 1)
    assert vector["ssa_frame_size"] == 1


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_measurement_reproduces_vector(vector: dict[str, Any]) -> None:
    size, ssa = int(vector["size"], 16), vector["ssa_frame_size"]
    fast = Measurement.ecreate(ssa, size)
    slow = Measurement()
    slow.ecreate(ssa, size)
    for offset, flags, data, measured in pages_of(vector):
        fast.page(offset, flags, data, measured)
        slow.eadd(offset, flags)
        if measured:
            for i in range(0, 4096, 256):
                slow.eextend(offset + i, data[i : i + 256])
    assert fast.finalize().hex() == vector["mrenclave"]
    assert slow.finalize().hex() == vector["mrenclave"]
    assert fast.update_count == slow.update_count == vector["update_count"]


def test_minimal_vector_against_hand_written_blocks() -> None:
    vector = next(v for v in VECTORS if v["name"] == "minimal-8k-one-reg-page")
    assert vector["size"] == "0x2000" and vector["ssa_frame_size"] == 1
    [(offset, flags, data, measured)] = list(pages_of(vector))
    assert (offset, flags, measured) == (0, 0x203, True)
    # ECREATE: "ECREATE\0", SSAFRAMESIZE=1 (u32), SIZE=0x2000 (u64), 44 zero bytes.
    stream = bytes.fromhex("4543524541544500010000000020000000000000") + bytes(44)
    # EADD: "EADD\0\0\0\0", offset 0 (u64), SECINFO.FLAGS = REG<<8 | W | R = 0x203 (u64), 40 zeros.
    stream += bytes.fromhex("454144440000000000000000000000000302000000000000") + bytes(40)
    for i in range(16):
        # EEXTEND: "EEXTEND\0", offset 0x100*i (u64), 48 zero bytes, then the 256 data bytes.
        stream += bytes.fromhex("45455854454e4400") + bytes((0, i)) + bytes(6) + bytes(48)
        stream += data[256 * i : 256 * (i + 1)]
    assert len(stream) == 64 * vector["update_count"] == 64 * 82
    assert hashlib.sha256(stream).hexdigest() == vector["mrenclave"]


def test_generator_is_standalone_and_reproduces_the_file() -> None:
    tree = ast.parse(GENERATOR.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= {"__future__", "argparse", "hashlib", "json", "pathlib", "struct", "sys"}
    spec = importlib.util.spec_from_file_location("gen_mrenclave_vectors", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render() == VECTORS_FILE.read_text(), "run tools/gen_mrenclave_vectors.py"
