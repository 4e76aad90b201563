"""sdk.loader end to end: the selftests' system calls, MRENCLAVE == EINIT's, PROVISIONKEY, errno."""

from __future__ import annotations

import dataclasses
import errno
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PAGE_SIZE, Attributes, KeyName, Keyrequest, Report, SgxStatus
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import DEFAULT_EPC_BASE, Machine, MachineConfig
from sgxsim.kernel import uapi
from sgxsim.kernel.main import Kernel, KernelConfig, validate_epc
from sgxsim.kernel.process import Process
from sgxsim.rand import Rng
from sgxsim.sdk.image import EnclaveImage, ImageBuilder, Segment, standard_image, tcs_page
from sgxsim.sdk.loader import (
    encl_ioc_add_pages,
    encl_ioc_create,
    encl_ioc_init,
    encl_ioc_provision,
    encl_map_area,
    load_enclave,
)
from sgxsim.sdk.sign import generate_signing_key, key_mrsigner, sign_enclave
from sgxsim.sdk.test_encl import build_test_encl

EPC_PAGES = 128

#: EREPORT (TARGETINFO all zero) and write the REPORT to the user buffer at RDI.
REPORT_PROGRAM = """
def enclave_entry(ctx):
    scratch = Scratch(ctx, rt_stack_top(ctx))
    ctx.write(ctx.rdi, rt_ereport(ctx, scratch, bytes(512), b"sgxsim sdk"))
    ctx.eexit(ctx.rcx)
"""

#: EGETKEY with the KEYREQUEST at RDI; write u64 status + the 16-byte key back to RDI.
GETKEY_PROGRAM = """
def enclave_entry(ctx):
    scratch = Scratch(ctx, rt_stack_top(ctx))
    status, key = rt_egetkey(ctx, scratch, ctx.read(ctx.rdi, 512))
    ctx.write(ctx.rdi, status.to_bytes(8, "little") + key)
    ctx.eexit(ctx.rcx)
"""


@dataclass
class Platform:
    machine: Machine
    kernel: Kernel
    proc: Process


def platform(*, sgx_lc: bool = True) -> Platform:
    config = MachineConfig(epc_sections=(EpcSectionConfig(DEFAULT_EPC_BASE, EPC_PAGES * PAGE_SIZE, 0),))
    machine = Machine(config, Rng(3))
    kernel = Kernel(machine, config=KernelConfig(sgx_lc=sgx_lc))
    return Platform(machine, kernel, Process(kernel, "loader"))


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_signing_key(11)


def assert_released(p: Platform) -> None:
    """Nothing of a failed or closed load is left: no fds, no device mappings, EPC all free."""
    assert p.proc.fds == {}
    assert not [m for m in p.proc.maps() if m[3] == "/dev/sgx_enclave"]
    report = validate_epc(p.kernel, expect_empty=True)
    assert report, report.problems
    assert p.kernel.log.warn_count == 0, p.kernel.log.format()


def run_program(
    p: Platform, encl_image: EnclaveImage, key: rsa.RSAPrivateKey, arg: bytes, *, provision: bool = False
) -> bytes:
    encl = load_enclave(p.proc, encl_image, key=key, provision=provision)
    buf = p.proc.alloc(PAGE_SIZE)
    p.proc.write(buf, arg)
    assert encl.call(buf) == 0
    assert encl.run.function == uapi.EEXIT
    out = p.proc.read(buf, PAGE_SIZE)
    encl.close()
    return out


def test_load_makes_the_selftest_mappings(key: rsa.RSAPrivateKey) -> None:
    p = platform()
    image = build_test_encl()
    encl = load_enclave(p.proc, image, key=key)
    assert encl.base % image.size == 0
    assert encl.tcs == (encl.base, encl.base + PAGE_SIZE)
    rows = {start: (end, perms, name) for start, end, perms, name in p.proc.maps()}
    for seg in image.segments:
        end, perms, name = rows[encl.base + seg.offset]
        assert (end, name) == (encl.base + seg.offset + seg.size, "/dev/sgx_enclave")
        expected = "".join(c if seg.prot & b else "-" for c, b in (("r", 1), ("w", 2), ("x", 4))) + "s"
        assert perms == expected
    assert [f.path for f in p.proc.fds.values()] == ["/dev/sgx_enclave"]
    assert encl.addr("encl_buffer") == encl.base + image.symbol("encl_buffer")
    with pytest.raises(InvalidArgument):
        encl.addr(image.size)
    with pytest.raises(InvalidArgument, match="tcs_index"):
        encl.call(encl.op_buffer, tcs_index=2)
    encl.close()
    encl.close()  # idempotent
    assert_released(p)


@pytest.mark.parametrize("heap_pages", [1, EPC_PAGES])
def test_builder_mrenclave_equals_einit(key: rsa.RSAPrivateKey, heap_pages: int) -> None:
    """The offline MRENCLAVE is what EINIT finalized (also when the build was paged out)."""
    p = platform()
    image = build_test_encl(heap_pages * PAGE_SIZE)
    encl = load_enclave(p.proc, image, key=key)
    (state,) = [s for s in p.machine.epc.secs_state.values() if s.base == encl.base]
    assert state.initialized
    assert state.mrenclave == image.mrenclave() == encl.sigstruct.mrenclave
    assert state.mrsigner == key_mrsigner(key)
    encl.close()
    assert_released(p)


def test_report_carries_the_builder_identity(key: rsa.RSAPrivateKey) -> None:
    p = platform()
    image = standard_image(REPORT_PROGRAM)
    report = Report.unpack(run_program(p, image, key, b"")[: Report.SIZE])
    assert report.mrenclave == image.mrenclave()
    assert report.mrsigner == key_mrsigner(key)
    assert report.reportdata[:10] == b"sgxsim sdk"
    assert (report.attributes, report.xfrm) == (int(Attributes.INIT | Attributes.MODE64BIT), 3)
    assert_released(p)


def provision_image() -> EnclaveImage:
    return standard_image(GETKEY_PROGRAM, attributes=int(Attributes.MODE64BIT | Attributes.PROVISIONKEY))


def test_provisionkey_needs_sgx_ioc_enclave_provision(key: rsa.RSAPrivateKey) -> None:
    p = platform()
    with pytest.raises(OSError) as exc:
        load_enclave(p.proc, provision_image(), key=key)
    assert exc.value.errno == errno.EACCES
    assert_released(p)


def test_provisionkey_granted_end_to_end(key: rsa.RSAPrivateKey) -> None:
    p = platform()
    request = Keyrequest(keyname=int(KeyName.PROVISION)).pack()
    out = run_program(p, provision_image(), key, request, provision=True)
    assert int.from_bytes(out[:8], "little") == SgxStatus.SUCCESS
    assert out[8:24] != bytes(16)
    # Without the attribute, EGETKEY refuses the provisioning key.
    out = run_program(p, standard_image(GETKEY_PROGRAM), key, request)
    assert int.from_bytes(out[:8], "little") == SgxStatus.SGX_INVALID_ATTRIBUTE
    assert out[8:24] == bytes(16)
    assert_released(p)


def test_provision_with_another_fd_does_not_grant(key: rsa.RSAPrivateKey) -> None:
    """SGX_IOC_ENCLAVE_PROVISION with a descriptor that is not /dev/sgx_provision: EINVAL, and
    EINIT of a PROVISIONKEY enclave still fails with EACCES."""
    p = platform()
    image = provision_image()
    fd = p.proc.open("/dev/sgx_enclave", uapi.O_RDWR)
    other = p.proc.open("/dev/sgx_enclave", uapi.O_RDWR)
    base = encl_map_area(p.proc, image.size)
    encl_ioc_create(p.proc, fd, image, base)
    for bad_fd in (other, 99):
        with pytest.raises(OSError) as exc:
            p.proc.ioctl(fd, uapi.SGX_IOC_ENCLAVE_PROVISION, uapi.sgx_enclave_provision(fd=bad_fd))
        assert exc.value.errno == errno.EINVAL
    for seg in image.segments:
        encl_ioc_add_pages(p.proc, fd, seg)
    with pytest.raises(OSError) as exc:
        encl_ioc_init(p.proc, fd, sign_enclave(image, key))
    assert exc.value.errno == errno.EACCES
    encl_ioc_provision(p.proc, fd)
    encl_ioc_init(p.proc, fd, sign_enclave(image, key))  # now granted
    p.proc.munmap(base, image.size)
    p.proc.close(other)
    p.proc.close(fd)
    assert_released(p)


def test_no_enclave_device_is_enoent(key: rsa.RSAPrivateKey) -> None:
    p = platform(sgx_lc=False)
    with pytest.raises(OSError) as exc:
        load_enclave(p.proc, build_test_encl(), key=key)
    assert exc.value.errno == errno.ENOENT


def one_page_image() -> EnclaveImage:
    # enclave_size(4096) = 4096: the selftests' rule, which ECREATE refuses (SIZE < 8 KiB).
    return EnclaveImage((Segment("tcs", 0, PAGE_SIZE, 0x100, data=tcs_page(0, 0)),), PAGE_SIZE)


@pytest.mark.parametrize(
    ("case", "want"),
    [
        ("ecreate_faults", errno.EIO),
        ("w_without_r", errno.EINVAL),
        ("tcs_with_permissions", errno.EINVAL),
        ("wrong_measurement", errno.EPERM),
        ("bad_vendor", errno.EINVAL),
        ("einittokenkey", errno.EACCES),
        ("bad_signature", errno.EPERM),
    ],
)
def test_loader_errors_surface_as_oserror(key: rsa.RSAPrivateKey, case: str, want: int) -> None:
    p = platform()
    image = build_test_encl()
    sig = None
    if case == "ecreate_faults":
        image = one_page_image()
    elif case in ("w_without_r", "tcs_with_permissions"):
        bad = Segment("bad", image.segments[-1].offset, PAGE_SIZE, 0x202 if case == "w_without_r" else 0x103)
        image = dataclasses.replace(image, segments=(*image.segments[:-1], bad))
    elif case == "wrong_measurement":
        sig = sign_enclave(build_test_encl(2 * PAGE_SIZE), key)
    elif case == "bad_vendor":
        sig = sign_enclave(image, key, vendor=0x1234)
    elif case == "einittokenkey":
        image = dataclasses.replace(image, attributes=int(Attributes.MODE64BIT | Attributes.EINITTOKENKEY))
    elif case == "bad_signature":
        sig = dataclasses.replace(sign_enclave(image, key), isvsvn=1)
    with pytest.raises(OSError) as exc:
        load_enclave(p.proc, image, key=key, sigstruct=sig)
    assert exc.value.errno == want
    assert_released(p)


def test_ioctl_state_errors(key: rsa.RSAPrivateKey) -> None:
    """The step functions one by one: re-CREATE, re-ADD and re-INIT are refused."""
    p = platform()
    image = build_test_encl()
    fd = p.proc.open("/dev/sgx_enclave", uapi.O_RDWR)
    base = encl_map_area(p.proc, image.size)
    assert base % image.size == 0
    encl_ioc_create(p.proc, fd, image, base)
    with pytest.raises(OSError) as exc:
        encl_ioc_create(p.proc, fd, image, base)
    assert exc.value.errno == errno.EINVAL
    for seg in image.segments:
        assert encl_ioc_add_pages(p.proc, fd, seg) == seg.size
    with pytest.raises(OSError) as exc:
        encl_ioc_add_pages(p.proc, fd, image.segments[0])
    assert exc.value.errno == errno.EBUSY
    sig = sign_enclave(image, key)
    encl_ioc_init(p.proc, fd, sig)
    with pytest.raises(OSError) as exc:
        encl_ioc_init(p.proc, fd, sig)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        encl_ioc_add_pages(p.proc, fd, image.segments[-1])
    assert exc.value.errno == errno.EINVAL
    p.proc.munmap(base, image.size)
    p.proc.close(fd)
    assert_released(p)


def test_load_enclave_argument_checks(key: rsa.RSAPrivateKey) -> None:
    p = platform()
    with pytest.raises(InvalidArgument, match="sigstruct or a signing key"):
        load_enclave(p.proc, build_test_encl())
    with pytest.raises(InvalidArgument, match="EnclaveImage"):
        load_enclave(p.proc, b"image", key=key)  # type: ignore[arg-type]
    b = ImageBuilder()
    b.add("x", PAGE_SIZE)
    with pytest.raises(InvalidArgument, match="Process"):
        load_enclave(None, b.build(size=0x2000), key=key)  # type: ignore[arg-type]
