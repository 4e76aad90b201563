"""sdk.runtime: link-time constants and the in-enclave helpers, run inside real enclaves."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PAGE_SIZE, KeyName, KeyPolicy, Keyrequest, SgxStatus
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import DEFAULT_EPC_BASE, Machine, MachineConfig
from sgxsim.kernel import uapi
from sgxsim.kernel.main import Kernel
from sgxsim.kernel.process import Process
from sgxsim.rand import Rng
from sgxsim.sdk.image import EnclaveImage, standard_image
from sgxsim.sdk.loader import load_enclave
from sgxsim.sdk.runtime import RUNTIME_SOURCE, link_program
from sgxsim.sdk.sign import generate_signing_key

WHOAMI_PROGRAM = """
def enclave_entry(ctx):
    base = rt_base(ctx)
    ctx.write_u64(ctx.rdi, base)
    ctx.write_u64(ctx.rdi + 8, rt_thread(ctx))
    ctx.write_u64(ctx.rdi + 16, rt_stack_top(ctx) - base)
    scratch = Scratch(ctx, rt_stack_top(ctx))
    ctx.write_u64(ctx.rdi + 24, scratch.put(b"abc", 64) - base)
    ctx.eexit(ctx.rcx)
"""

SEAL_PROGRAM = """
def enclave_entry(ctx):
    scratch = Scratch(ctx, rt_stack_top(ctx))
    status, key = rt_egetkey(ctx, scratch, ctx.read(ctx.rdi, 512))
    ctx.write(ctx.rdi, status.to_bytes(8, "little") + key)
    ctx.eexit(ctx.rcx)
"""

COPY_PROGRAM = """
def enclave_entry(ctx):
    scratch = Scratch(ctx, rt_stack_top(ctx))
    dst = ctx.read_u64(ctx.rdi)
    rax = rt_eacceptcopy(ctx, scratch, dst, rt_base(ctx) + ENCL_DATA, 0x203)
    ctx.write_u64(ctx.rdi + 8, rax)
    ctx.write(ctx.rdi + 16, ctx.read(dst, 16))
    rt_emodpe(ctx, scratch, dst, 0x7)
    ctx.eexit(ctx.rcx)
"""


@dataclass
class Platform:
    machine: Machine
    kernel: Kernel
    proc: Process


def platform() -> Platform:
    config = MachineConfig(epc_sections=(EpcSectionConfig(DEFAULT_EPC_BASE, 128 * PAGE_SIZE, 0),))
    machine = Machine(config, Rng(5))
    kernel = Kernel(machine)
    return Platform(machine, kernel, Process(kernel, "runtime"))


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return generate_signing_key(21), generate_signing_key(22)


def call(p: Platform, image: EnclaveImage, key: rsa.RSAPrivateKey, arg: bytes, tcs_index: int = 0) -> bytes:
    encl = load_enclave(p.proc, image, key=key)
    buf = p.proc.alloc(PAGE_SIZE)
    p.proc.write(buf, arg)
    assert encl.call(buf, tcs_index) == 0
    assert encl.run.function == uapi.EEXIT
    out = p.proc.read(buf, PAGE_SIZE)
    encl.close()
    return out


@given(values=st.dictionaries(st.sampled_from(["ENCL_A", "ENCL_B", "X_1"]), st.integers(0, 2**64 - 1)))
def test_link_program_constants_are_fixed_width(values: dict[str, int]) -> None:
    zeros = dict.fromkeys(values, 0)
    linked = link_program("pass\n", values, runtime=False)
    assert len(linked) == len(link_program("pass\n", zeros, runtime=False))
    namespace: dict[str, object] = {}
    exec(linked, namespace)
    assert {k: namespace[k] for k in values} == values


def test_link_program_layout_and_checks() -> None:
    a = link_program("x = 1\n", {"FLAG": True, "N": 5})
    b = link_program("x = 1\n", {"FLAG": False, "N": 0})
    assert len(a) == len(b)
    assert RUNTIME_SOURCE in a and a.endswith("x = 1\n")
    assert RUNTIME_SOURCE not in link_program("", {}, runtime=False)
    for bad in ({"lower": 1}, {"1X": 1}, {"": 1}, {"X": -1}, {"X": 1 << 64}, {"X": "1"}):
        with pytest.raises(InvalidArgument):
            link_program("", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        link_program(b"", {})  # type: ignore[arg-type]


def test_thread_base_and_stack(keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]) -> None:
    image = standard_image(WHOAMI_PROGRAM, threads=2)
    p = platform()
    for tcs_index in (0, 1):
        out = call(p, image, keys[0], b"", tcs_index)
        base, thread, stack_top, scratch = (int.from_bytes(out[i : i + 8], "little") for i in range(0, 32, 8))
        assert base % image.size == 0
        assert thread == tcs_index
        assert stack_top == image.symbol("stack") + (tcs_index + 1) * PAGE_SIZE
        assert scratch == (stack_top - 3) & ~63


def seal_key(p: Platform, image: EnclaveImage, key: rsa.RSAPrivateKey, policy: int) -> bytes:
    request = Keyrequest(keyname=int(KeyName.SEAL), keypolicy=policy).pack()
    out = call(p, image, key, request)
    assert int.from_bytes(out[:8], "little") == SgxStatus.SUCCESS
    return out[8:24]


def test_seal_keys_follow_the_policy(keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]) -> None:
    p = platform()
    one = standard_image(SEAL_PROGRAM, data=b"one")
    two = standard_image(SEAL_PROGRAM, data=b"two")
    mre, mrs = int(KeyPolicy.MRENCLAVE), int(KeyPolicy.MRSIGNER)
    k1 = seal_key(p, one, keys[0], mre)
    assert k1 == seal_key(p, one, keys[0], mre)  # same enclave, same key
    assert k1 != seal_key(p, two, keys[0], mre)  # other MRENCLAVE
    assert seal_key(p, one, keys[0], mrs) == seal_key(p, two, keys[0], mrs)  # same signer
    assert seal_key(p, one, keys[0], mrs) != seal_key(p, one, keys[1], mrs)  # other signer


def test_eacceptcopy_into_an_augmented_page(keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]) -> None:
    p = platform()
    image = standard_image(COPY_PROGRAM, data=b"copied by EACCEPTCOPY", heap_size=0)
    encl = load_enclave(p.proc, image, key=keys[0])
    hole = encl.base + image.src_size
    assert image.src_size + PAGE_SIZE <= image.size
    p.proc.mmap(
        hole, PAGE_SIZE, uapi.PROT_READ | uapi.PROT_WRITE, uapi.MAP_SHARED | uapi.MAP_FIXED, encl.fd, 0
    )
    buf = p.proc.alloc(hole.to_bytes(8, "little"))
    assert encl.call(buf) == 0
    assert encl.run.function == uapi.EEXIT
    out = p.proc.read(buf, 32)
    assert int.from_bytes(out[8:16], "little") == SgxStatus.SUCCESS
    assert out[16:32] == b"copied by EACCEP"
    assert p.machine.stats.get("EAUG", 0) == 1
    encl.close()
