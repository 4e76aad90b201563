#!/usr/bin/env python3
"""Generate tests/vectors/mrenclave.json: known-answer MRENCLAVE vectors.

This script is deliberately independent of sgxsim: it imports nothing from the package (standard
library only) and re-implements the *published* enclave measurement algorithm from its sources,
so the vectors check sgxsim's ``Measurement`` against a second, separately written implementation:

* Linux kernel, ``tools/testing/selftests/sgx/sigstruct.c`` (``encl_measure``,
  ``mrenclave_ecreate`` / ``mrenclave_eadd`` / ``mrenclave_eextend``; tags ``MRECREATE``,
  ``MREADD``, ``MREEXTEND``) and ``load.c`` (``encl_load``: segment flags, heap, size rule);
* Gramine, ``python/graminelibos/sgx_sign.py`` (``do_ecreate`` / ``do_eadd`` / ``do_eextend``,
  ``get_memory_areas``, ``populate_memory_areas``, ``generate_measurement``);
* Intel SGX SDK, ``sdk/sign_tool/SignTool/enclave_creator_sign.cpp`` (ECREATE/EADD/EEXTEND
  update blocks);
* Intel SDM Vol. 3D, ECREATE / EADD / EEXTEND / EINIT pseudo-code ("TMPUPDATEFIELD").

Every update is one 64-byte block fed to one running SHA-256 (little-endian integers):

    ECREATE: "ECREATE\\0" | SSAFRAMESIZE u32 (pages) | SIZE u64 | 44 zero bytes
    EADD:    "EADD\\0\\0\\0\\0" | enclave offset u64 | SECINFO.FLAGS u64 | 40 zero bytes
    EEXTEND: "EEXTEND\\0" | enclave offset u64 | 48 zero bytes, then the 256 data bytes

A page added with measurement gets one EADD block and 16 EEXTENDs (offsets off, off+0x100, ...,
off+0xF00); an unmeasured page only its EADD block. MRENCLAVE is the SHA-256 digest.

Page contents are described compactly so that both the generator and the test can expand them
(see ``DESCRIPTORS``). Usage::

    python tools/gen_mrenclave_vectors.py            # (re)write tests/vectors/mrenclave.json
    python tools/gen_mrenclave_vectors.py --check    # exit 1 if the file is not up to date
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import struct
import sys

PAGE = 4096
CHUNK = 256

# SECINFO.FLAGS: permissions in bits 2:0, page type in bits 15:8 (SDM SECINFO; kernel asm/sgx.h).
R, W, X = 0x1, 0x2, 0x4
PT_TCS, PT_REG = 1, 2
TCS = PT_TCS << 8  # EADD hashes a TCS's SECINFO with R/W/X forced to 0
REG = PT_REG << 8

DESCRIPTORS = {
    "zero": "all bytes 0",
    "fill:<byte>": "every byte equals <byte> (e.g. fill:0xab)",
    "pattern:<hex>": "the hex byte string repeated from the start of the run (e.g. pattern:deadbeef)",
    "hex:<hex>": "the hex byte string at the start of the run, zeros after it",
    "sha256-counter:<seed>": "SHA-256(seed_utf8 || u32le(i)) for i = 0, 1, 2, ... concatenated",
    "fields:<off>/<width>=<value>;...": "zeros, with each <value> stored as a <width>-byte little-endian "
    "integer at byte <off> of the run (numbers in Python int() syntax)",
}
DESCRIPTOR_NOTE = (
    "Each page entry covers `count` consecutive pages starting at `offset` with the same SECINFO "
    "flags and measurement; `data` describes the run's count*4096 bytes as one stream."
)


# ----------------------------------------------------------------------------- page data
def expand(descriptor: str, length: int) -> bytes:
    """The ``length`` bytes a data descriptor stands for (see ``DESCRIPTORS``)."""
    kind, _, arg = descriptor.partition(":")
    if kind == "zero" and not arg:
        return bytes(length)
    if kind == "fill":
        return bytes([int(arg, 0)]) * length
    if kind == "pattern":
        unit = bytes.fromhex(arg)
        return (unit * (length // len(unit) + 1))[:length]
    if kind == "hex":
        head = bytes.fromhex(arg)
        return head + bytes(length - len(head))
    if kind == "sha256-counter":
        seed = arg.encode()
        out = bytearray()
        counter = 0
        while len(out) < length:
            out += hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
            counter += 1
        return bytes(out[:length])
    if kind == "fields":
        out = bytearray(length)
        for item in arg.split(";"):
            where, _, value = item.partition("=")
            off, _, width = where.partition("/")
            o, w = int(off, 0), int(width, 0)
            out[o : o + w] = int(value, 0).to_bytes(w, "little")
        return bytes(out)
    raise ValueError(f"unknown page data descriptor {descriptor!r}")


def fields(**values: tuple[int, int, int]) -> str:
    """A ``fields:`` descriptor from name=(offset, width, value) (names only document the intent)."""
    return "fields:" + ";".join(f"{off:#x}/{width}={value:#x}" for off, width, value in values.values())


def tcs(ossa: int, nssa: int, oentry: int, **extra: int) -> str:
    """A TCS page (SDM TCS layout: OSSA @16, NSSA @28, OENTRY @32, OFSBASE @48, OGSBASE @56,
    FSLIMIT @64, GSLIMIT @68); STATE, FLAGS, CSSA and AEP are 0 as EADD requires."""
    layout = {"ofsbase": (48, 8), "ogsbase": (56, 8), "fslimit": (64, 4), "gslimit": (68, 4)}
    spec = {"ossa": (16, 8, ossa), "nssa": (28, 4, nssa), "oentry": (32, 8, oentry)}
    for name, value in extra.items():
        off, width = layout[name]
        spec[name] = (off, width, value)
    return fields(**spec)


# ----------------------------------------------------------------------------- measurement
def measure(size: int, ssa_frame_size: int, pages: list[dict[str, object]]) -> tuple[str, int]:
    """MRENCLAVE (hex) and the number of 64-byte update blocks, block by block as published."""
    h = hashlib.sha256()
    blocks = 0

    def update(block: bytes) -> None:
        nonlocal blocks
        assert len(block) == 64
        h.update(block)
        blocks += 1

    update(struct.pack("<8sIQ44s", b"ECREATE", ssa_frame_size, size, b""))
    for run in pages:
        offset = int(str(run["offset"]), 0)
        flags = int(str(run["flags"]), 0)
        count = int(str(run["count"]))
        measured = run["measured"] is True
        data = expand(str(run["data"]), count * PAGE) if measured else b""
        for index in range(count):
            page_offset = offset + index * PAGE
            update(struct.pack("<8sQQ40s", b"EADD", page_offset, flags, b""))
            if measured:
                page = data[index * PAGE : (index + 1) * PAGE]
                for chunk in range(0, PAGE, CHUNK):
                    update(struct.pack("<8sQ48s", b"EEXTEND", page_offset + chunk, b""))
                    for block in range(0, CHUNK, 64):
                        update(page[chunk + block : chunk + block + 64])
    return h.hexdigest(), blocks


def run(offset: int, count: int, flags: int, measured: bool, data: str) -> dict[str, object]:
    return {
        "offset": f"{offset:#x}",
        "count": count,
        "flags": f"{flags:#x}",
        "measured": measured,
        "data": data,
    }


# ----------------------------------------------------------------------------- layouts
def linux_selftest() -> dict[str, object]:
    """The kernel SGX selftest enclave (test_encl.elf) as load.c/encl_load lays it out."""
    text, data, heap = 0x2000, 0x4000, 0xA000
    ssa1, ssa2 = data + 0x2000, data + 0x3000  # .data: encl_buffer[8192], encl_ssa_tcs1, encl_ssa_tcs2
    pages = [
        # Segment 0 (.tcs, PF_R|PF_W): flags = SGX_PAGE_TYPE_TCS << 8, permission bits 0.
        run(0x0000, 1, TCS, True, tcs(ssa1, 1, text, fslimit=0xFFFFFFFF, gslimit=0xFFFFFFFF)),
        run(0x1000, 1, TCS, True, tcs(ssa2, 1, text, fslimit=0xFFFFFFFF, gslimit=0xFFFFFFFF)),
        # Segment 1 (.text, PF_R|PF_X): (REG << 8) | PROT_READ | PROT_EXEC, measured.
        run(text, 2, REG | R | X, True, "sha256-counter:linux-selftest/test_encl.text"),
        # Segment 2 (.data, PF_R|PF_W): encl_buffer[8192] = {1}, then SSA x2 and stacks x2.
        run(data, 2, REG | R | W, True, "hex:01"),
        run(data + 0x2000, 4, REG | R | W, True, "zero"),
        # Heap segment: heap_size = 4096 (ENCL_HEAP_SIZE_DEFAULT), RW, measure = false.
        run(heap, 1, REG | R | W, False, "zero"),
    ]
    src_size = heap + PAGE
    encl_size = 0x1000
    while encl_size < src_size:  # load.c: smallest power of two >= 4096 covering src_size
        encl_size <<= 1
    return {
        "name": "linux-selftest-test_encl",
        "provenance": (
            "Layout of the Linux kernel SGX selftest enclave as built by "
            "tools/testing/selftests/sgx/load.c encl_load()/encl_build(): segment 0 is the TCS "
            "segment (SECINFO flags SGX_PAGE_TYPE_TCS << 8, permission bits 0), the other PT_LOAD "
            "segments are (SGX_PAGE_TYPE_REG << 8) | prot and measured, then a 4096-byte heap "
            "segment RW and not measured; encl_size is the smallest power of two >= 4096 covering "
            "the image; ssa_frame_size 1 (encl_ioc_create, sigstruct.c mrenclave_ecreate). Image "
            "per test_encl.lds / test_encl_bootstrap.S: two TCS pages at 0x0 and 0x1000 (OSSA = "
            "encl_ssa_tcs1/2, NSSA 1, OENTRY = encl_entry, FS/GS limit 0xFFFFFFFF), .text R|X, .data "
            "R|W starting with encl_buffer[8192] = {1}, then two SSA pages and two stack pages. The "
            "code bytes are a deterministic stand-in (sha256-counter), not the compiled ELF. "
            "MRENCLAVE computed with sigstruct.c encl_measure()'s algorithm."
        ),
        "size": f"{encl_size:#x}",
        "ssa_frame_size": 1,
        "pages": pages,
    }


def gramine_like() -> dict[str, object]:
    """A Gramine-style enclave: areas populated top-down, large unmeasured heap hashed last."""
    size = 0x400_0000  # sgx.enclave_size = "64M"
    threads = 2  # sgx.max_threads
    ssa_frame_pages, ssa_frames = 4, 2  # SSA_FRAME_SIZE = 16 KiB, SSA_FRAME_NUM = 2
    stack_pages, sig_stack_pages = 64, 16  # ENCLAVE_STACK_SIZE 256 KiB, ENCLAVE_SIG_STACK_SIZE 64 KiB
    pal_text_pages, pal_data_pages = 6, 2
    heap_min = 0x10000  # MMAP_MIN_ADDR
    manifest = b'loader.entrypoint = "file:libsysdb.so"\nsgx.enclave_size = "64M"\nsgx.max_threads = 2\n\0'

    top = size
    areas: list[tuple[str, int, int]] = []  # (name, address, pages), in get_memory_areas order

    def place(name: str, pages: int) -> int:
        nonlocal top
        top -= pages * PAGE
        areas.append((name, top, pages))
        return top

    manifest_at = place("manifest", 1)
    ssa_at = place("ssa", threads * ssa_frame_pages * ssa_frames)
    tcs_at = place("tcs", threads)
    tls_at = place("tls", threads)
    stacks = [place(f"stack{t}", stack_pages) for t in range(threads)]
    sig_stacks = [place(f"sig_stack{t}", sig_stack_pages) for t in range(threads)]
    pal_at = place("pal", pal_text_pages + pal_data_pages)
    entry = pal_at + 0x1040
    heap_pages = (pal_at - heap_min) // PAGE

    pages = [run(manifest_at, 1, REG | R, True, "hex:" + manifest.hex())]
    pages.append(run(ssa_at, threads * ssa_frame_pages * ssa_frames, REG | R | W, True, "zero"))
    for t in range(threads):
        ssa = ssa_at + t * ssa_frame_pages * ssa_frames * PAGE
        pages.append(
            run(
                tcs_at + t * PAGE,
                1,
                TCS,
                True,
                tcs(ssa, ssa_frames, entry, ogsbase=tls_at + t * PAGE, fslimit=0xFFF, gslimit=0xFFF),
            )
        )
    for t in range(threads):
        tls = tls_at + t * PAGE
        pages.append(
            run(
                tls,
                1,
                REG | R | W,
                True,
                fields(
                    common_self=(0x0, 8, tls),
                    enclave_size=(0x8, 8, size),
                    tcs_offset=(0x10, 8, tcs_at + t * PAGE),
                    initial_stack=(0x18, 8, stacks[t] + stack_pages * PAGE),
                    sig_stack_low=(0x20, 8, sig_stacks[t]),
                    sig_stack_high=(0x28, 8, sig_stacks[t] + sig_stack_pages * PAGE),
                    ssa=(0x30, 8, ssa_at + t * ssa_frame_pages * ssa_frames * PAGE),
                    heap_min=(0x38, 8, heap_min),
                    heap_max=(0x40, 8, pal_at),
                ),
            )
        )
    pages += [run(at, stack_pages, REG | R | W, True, "zero") for at in stacks]
    pages += [run(at, sig_stack_pages, REG | R | W, True, "zero") for at in sig_stacks]
    pages.append(run(pal_at, pal_text_pages, REG | R | X, True, "sha256-counter:gramine/libpal.so/text"))
    pages.append(
        run(pal_at + pal_text_pages * PAGE, pal_data_pages, REG | R | W, True, "pattern:0123456789abcdef")
    )
    # The "free" area [heap_min, pal): RWX, not measured, added after every other area.
    pages.append(run(heap_min, heap_pages, REG | R | W | X, False, "zero"))
    return {
        "name": "gramine-like-64m",
        "provenance": (
            "Shaped like Gramine's signer (python/graminelibos/sgx_sign.py): enclave_size 64 MiB, "
            "max_threads 2; memory areas in get_memory_areas() order (manifest, ssa, tcs, tls, "
            "stacks, sig_stacks, pal) populated top-down from the end of the enclave by "
            "populate_memory_areas(), all measured; SSA_FRAME_SIZE 16 KiB so the ECREATE "
            "SSAFRAMESIZE is 4 pages, SSA_FRAME_NUM 2 (TCS NSSA 2, OFS/OGS limit 0xFFF, OGSBASE = "
            "the thread's TLS page); then the 'free' heap [MMAP_MIN_ADDR=0x10000, pal) with flags "
            "REG|R|W|X, not measured, hashed last although lowest in memory "
            "(generate_measurement() iterates areas in list order). Area sizes, TLS field "
            "offsets and page contents are illustrative stand-ins, not a real Gramine build."
        ),
        "size": f"{size:#x}",
        "ssa_frame_size": ssa_frame_pages,
        "pages": pages,
    }


def minimal_8k() -> dict[str, object]:
    """The smallest legal enclave (ECREATE requires SIZE >= 8 KiB) with one measured page."""
    return {
        "name": "minimal-8k-one-reg-page",
        "provenance": (
            "Minimal enclave: SECS.SIZE 0x2000 (the smallest ECREATE accepts), SSAFRAMESIZE 1, one "
            "REG page R|W at offset 0 added with measurement. Algorithm: SDM ECREATE/EADD/EEXTEND "
            "update blocks, identical in sigstruct.c, sgx_sign.py and enclave_creator_sign.cpp."
        ),
        "size": "0x2000",
        "ssa_frame_size": 1,
        "pages": [run(0x0, 1, REG | R | W, True, "sha256-counter:minimal-8k")],
    }


def tcs_and_high_offsets() -> dict[str, object]:
    """Edge cases: TCS pages measured and unmeasured, X-only pages, offsets above 4 GiB."""
    size = 1 << 33  # 8 GiB ELRANGE
    high = 0x1_2345_F000  # enclave offset > 4 GiB whose byte 1 is 0xF0 (EEXTEND offsets 0x...F000-0x...FF00)
    return {
        "name": "tcs-flags-and-high-offsets",
        "provenance": (
            "Edge cases of the published algorithm: a TCS page EADDed with R|W|X requested is "
            "hashed with SECINFO.FLAGS = PT_TCS << 8 only (SDM EADD forces R/W/X of a TCS to 0 "
            "before the EADD block is hashed; the vector stores the hashed flags); a second TCS "
            "added without EEXTEND (the kernel's SGX_PAGE_MEASURE is optional per page); an "
            "execute-only REG page; measured pages at enclave offsets above 4 GiB and at the last "
            "page of an 8 GiB enclave (64-bit EADD/EEXTEND offset fields); SSAFRAMESIZE 2; pages "
            "not in address order."
        ),
        "size": f"{size:#x}",
        "ssa_frame_size": 2,
        "pages": [
            run(0x0, 1, TCS, True, tcs(0x3000, 2, 0x2000)),
            run(0x1000, 1, TCS, False, tcs(0x5000, 2, 0x2000)),
            run(size - PAGE, 1, REG | R | W, True, "fill:0xa5"),
            run(0x2000, 1, REG | X, True, "pattern:deadbeef"),
            run(high, 3, REG | R | X, True, "sha256-counter:high-offset"),
            run(0x3000, 4, REG | R | W, False, "zero"),
        ],
    }


LAYOUTS = (linux_selftest, gramine_like, minimal_8k, tcs_and_high_offsets)


def build() -> dict[str, object]:
    """The whole vector file as a JSON-ready dict (deterministic)."""
    vectors = []
    for layout in LAYOUTS:
        vector = layout()
        pages = vector["pages"]
        assert isinstance(pages, list)
        mrenclave, blocks = measure(int(str(vector["size"]), 0), int(str(vector["ssa_frame_size"])), pages)
        vector["update_count"] = blocks
        vector["mrenclave"] = mrenclave
        vectors.append(vector)
    return {
        "description": "Known-answer MRENCLAVE vectors (SHA-256 over ECREATE/EADD/EEXTEND update blocks).",
        "generator": "tools/gen_mrenclave_vectors.py (standard library only; imports nothing from sgxsim)",
        "algorithm_sources": [
            "torvalds/linux: tools/testing/selftests/sgx/sigstruct.c "
            "(encl_measure, mrenclave_ecreate/eadd/eextend)",
            "torvalds/linux: tools/testing/selftests/sgx/load.c "
            "(encl_load: segment flags, heap, enclave size)",
            "gramineproject/gramine: python/graminelibos/sgx_sign.py "
            "(do_ecreate/do_eadd/do_eextend, memory areas)",
            "intel/linux-sgx: sdk/sign_tool/SignTool/enclave_creator_sign.cpp (ECREATE/EADD/EEXTEND blocks)",
            "Intel SDM Vol. 3D: ECREATE, EADD, EEXTEND, EINIT pseudo-code (TMPUPDATEFIELD, update counter)",
        ],
        "block_layouts": {
            "ECREATE": "'ECREATE\\0' | SSAFRAMESIZE u32 | SIZE u64 | 44 zero bytes",
            "EADD": "'EADD\\0\\0\\0\\0' | offset u64 | SECINFO.FLAGS u64 | 40 zero bytes",
            "EEXTEND": "'EEXTEND\\0' | offset u64 | 48 zero bytes, then 256 data bytes (4 blocks)",
        },
        "update_count": "number of 64-byte blocks hashed (ECREATE 1, EADD 1, EEXTEND 5)",
        "page_data_descriptors": DESCRIPTORS,
        "page_runs": DESCRIPTOR_NOTE,
        "vectors": vectors,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    default = pathlib.Path(__file__).resolve().parent.parent / "tests" / "vectors" / "mrenclave.json"
    parser = argparse.ArgumentParser(description="Generate the MRENCLAVE known-answer vectors.")
    parser.add_argument("--out", type=pathlib.Path, default=default, help=f"output file (default {default})")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the file differs")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date; run {pathlib.Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
