"""sdk.quoting: the PCE, the QE and the attestable application enclave, run through the driver.

Every enclave here is built, signed, loaded with the ioctls and entered through the vDSO. The
PCK key is checked against an independent derivation from the machine's fuses (the
KeyDependencies EGETKEY builds for KEYNAME=PROVISION); quotes are checked field by field against
the attest library's builder; sealing is checked across an EUPDATESVN and a cold reset.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import hashlib
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgxsim.attest import (
    CertDataType,
    build_quote_v3,
    build_quote_v4,
    derive_p256_key,
    ecdsa_raw_verify,
    parse_quote,
    qe_report_data,
)
from sgxsim.attest.formats import public_key_from_raw
from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PAGE_SIZE, Attributes, KeyName, Report, SgxStatus, Targetinfo
from sgxsim.hw.cpu import MicrocodePatch
from sgxsim.hw.crypto import KeyDependencies, derive_key
from sgxsim.hw.machine import Machine, MachineConfig
from sgxsim.kernel import encls as kencls
from sgxsim.kernel import uapi
from sgxsim.kernel.main import Kernel
from sgxsim.kernel.process import Process
from sgxsim.rand import Rng
from sgxsim.sdk.loader import load_enclave
from sgxsim.sdk.quoting import (
    DEFAULT_QE_AUTH_DATA,
    INTEL_AE_VENDOR,
    KDF_SOURCE,
    PAK_LABEL,
    PCE_ISVSVN,
    PCE_PROVISION_KEY_ATTRIBUTEMASK,
    QE_ATT_LABEL,
    QE_ISVSVN,
    SEALED_DATA_HEADER_SIZE,
    AeCallError,
    AeFunction,
    AppEnclave,
    EnclaveBuild,
    EnclaveLost,
    PceError,
    ProvisioningCertificationEnclave,
    Quote3Error,
    QuotingEnclave,
    SgxError,
    ae_call,
    build_app,
    build_pce,
    build_qe,
    certification_data,
    load_app,
    load_pce,
    load_qe,
    p256_scalar_from_key,
    pck_private_key,
    ppid_from_provision_key,
    target_info_of,
)
from sgxsim.sdk.sign import generate_signing_key, key_mrsigner

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
CHAIN = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
BOOT_CPUSVN = bytes([2] * 16)


def late_cpusvn(late: int, base: int = 2) -> bytes:
    return MicrocodePatch.with_svns(0, base=base, late_microcode=late).svn


# ------------------------------------------------------------------------------ fixtures


@dataclass(frozen=True)
class Builds:
    intel: rsa.RSAPrivateKey
    isv: rsa.RSAPrivateKey
    pce: EnclaveBuild
    qe: EnclaveBuild
    app: EnclaveBuild


@pytest.fixture(scope="module")
def builds() -> Builds:
    intel = generate_signing_key(Rng(11).stream("intel"))
    isv = generate_signing_key(Rng(11).stream("isv"))
    return Builds(intel, isv, build_pce(intel), build_qe(intel), build_app(isv))


@dataclass
class Box:
    """One booted machine with the PCE and QE in an "aesm" process and the app in its own."""

    machine: Machine
    kernel: Kernel
    psw: Process
    pce: ProvisioningCertificationEnclave
    qe: QuotingEnclave
    app: AppEnclave
    b: Builds


def boot(b: Builds, seed: int = 1) -> Box:
    machine = Machine(MachineConfig(), Rng(seed))
    kernel = Kernel(machine)
    psw = Process(kernel, "aesm")
    app = load_app(Process(kernel, "app"), b.app, random.Random(seed))
    return Box(machine, kernel, psw, load_pce(psw, b.pce), load_qe(psw, b.qe), app, b)


@pytest.fixture
def box(builds: Builds) -> Iterator[Box]:
    bx = boot(builds)
    yield bx
    assert bx.kernel.log.warn_count == 0, bx.kernel.log.format()


def expected_provision_key(machine: Machine, pce: EnclaveBuild, cpusvn: bytes, pcesvn: int) -> bytes:
    """What EGETKEY(PROVISION) gives the PCE: SDM key dependencies, written out independently."""
    mask = PCE_PROVISION_KEY_ATTRIBUTEMASK
    attrs = (mask | int(Attributes.INIT | Attributes.DEBUG)) & pce.secs_attributes
    deps = KeyDependencies(
        keyname=int(KeyName.PROVISION),
        isvprodid=pce.isvprodid,
        isvsvn=pcesvn,
        attributes=struct.pack("<QQ", attrs, 0),
        attributemask=struct.pack("<QQ", mask, 0),
        mrsigner=pce.mrsigner,
        cpusvn=cpusvn,
        miscselect=0,
        miscmask=0,
    )
    return derive_key(machine.fused_secret, deps)


def verifies(pub: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> bool:
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        pub.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def exit_all(kernel: Kernel) -> None:
    for proc in list(kernel.processes.values()):
        if not proc.exited:
            proc.exit()


def raise_cpusvn(box: Box, late: int) -> None:
    """Stand-in for the kernel's update path: empty EPC, patch every CPU, EUPDATESVN."""
    exit_all(box.kernel)
    assert not box.machine.epc.epcm.valid.any()
    patch = MicrocodePatch.with_svns(0xD0003A5 + late, base=2, late_microcode=late)
    for cpu in range(len(box.machine.cpus)):
        assert box.machine.load_microcode(cpu, patch)
    assert kencls.eupdatesvn(box.kernel) == SgxStatus.SUCCESS
    assert box.machine.cpusvn == late_cpusvn(late)


def certify(box: Box) -> tuple[bytes, bytes, bytes]:
    """QE key report, PCE signature at the boot TCB, certification data: what the quote library caches."""
    init = box.qe.gen_att_key(box.pce.target_info())
    sig = box.pce.certify_enclave(init.report, BOOT_CPUSVN, PCE_ISVSVN)
    return init.report, sig, certification_data(init.report_body, sig, DEFAULT_QE_AUTH_DATA, CHAIN)


# ------------------------------------------------------------------------------ builds and loading


def test_architectural_enclaves_are_intel_signed_provisionkey_enclaves(builds: Builds) -> None:
    for build, prodid, svn in ((builds.pce, 1, PCE_ISVSVN), (builds.qe, 1, QE_ISVSVN)):
        assert build.provision and build.image.attributes & Attributes.PROVISIONKEY
        assert build.sigstruct.vendor == INTEL_AE_VENDOR
        assert build.mrsigner == key_mrsigner(builds.intel)
        assert (build.isvprodid, build.isvsvn) == (prodid, svn)
        assert build.mrenclave == build.image.mrenclave()
    assert builds.pce.mrenclave != builds.qe.mrenclave
    assert not builds.app.provision and builds.app.sigstruct.vendor == 0
    assert builds.app.mrsigner == key_mrsigner(builds.isv) != builds.pce.mrsigner


@pytest.mark.parametrize("which", ["pce", "qe"])
def test_provisionkey_needs_the_provision_ioctl(builds: Builds, which: str) -> None:
    build: EnclaveBuild = getattr(builds, which)
    kernel = Kernel(Machine(MachineConfig(), Rng(3)))
    proc = Process(kernel, "aesm")
    with pytest.raises(OSError) as exc:
        load_enclave(proc, build.image, sigstruct=build.sigstruct, provision=False)
    assert exc.value.errno == errno.EACCES
    handle = load_pce(proc, build) if which == "pce" else load_qe(proc, build)
    me = handle.self_report()
    assert me.attributes == int(Attributes.INIT | Attributes.MODE64BIT | Attributes.PROVISIONKEY)
    assert (me.mrenclave, me.mrsigner, me.isvsvn) == (build.mrenclave, build.mrsigner, build.isvsvn)


def test_a_debug_build_fails_einit_against_a_production_signature(builds: Builds) -> None:
    # The AEs are signed with DEBUG in the attribute mask: a debug SECS does not match.
    debug = build_app(builds.isv, debug=True)
    forged = EnclaveBuild("app", debug.image, builds.app.sigstruct, provision=False)
    proc = Process(Kernel(Machine(MachineConfig(), Rng(4))), "app")
    with pytest.raises(OSError) as exc:
        load_app(proc, forged)
    assert exc.value.errno == errno.EPERM  # EINIT returned an SGX error code


# ------------------------------------------------------------------------------ key derivations


def _enclave_kdf() -> dict[str, object]:
    # As the engine runs it: its own namespace named "enclave", the module's bytes (it imports its crypto).
    namespace: dict[str, object] = {"__name__": "enclave"}
    exec(KDF_SOURCE, namespace)
    return namespace


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), label=st.sampled_from([PAK_LABEL, QE_ATT_LABEL]))
def test_host_kdf_mirrors_the_enclave_source(key: bytes, label: bytes) -> None:
    ns = _enclave_kdf()
    scalar = p256_scalar_from_key(key, label)
    assert ns["kdf_p256_scalar"](key, label) == scalar  # type: ignore[operator]
    assert 1 <= scalar <= P256_N - 1
    assert ns["kdf_ppid"](key) == ppid_from_provision_key(key)  # type: ignore[operator]
    assert pck_private_key(key).private_numbers().private_value == p256_scalar_from_key(key, PAK_LABEL)


def test_kdf_rejects_bad_keys() -> None:
    with pytest.raises(InvalidArgument):
        p256_scalar_from_key(bytes(15), PAK_LABEL)
    with pytest.raises(InvalidArgument):
        p256_scalar_from_key(bytes(16), b"short")
    with pytest.raises(InvalidArgument):
        ppid_from_provision_key("not bytes")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ the PCE


def test_pck_key_is_the_provision_key_of_the_requested_tcb(box: Box) -> None:
    init = box.qe.gen_att_key(box.pce.target_info())
    body = init.report[:384]
    keys = {}
    # The boot TCB and two older ones (EGETKEY allows a CPUSVN/ISVSVN at or below the platform's).
    for cpusvn, pcesvn in ((BOOT_CPUSVN, PCE_ISVSVN), (late_cpusvn(1), PCE_ISVSVN), (late_cpusvn(0, 1), 11)):
        sig = box.pce.certify_enclave(init.report, cpusvn, pcesvn)
        pck = pck_private_key(expected_provision_key(box.machine, box.b.pce, cpusvn, pcesvn))
        assert verifies(pck.public_key(), sig, body)
        keys[(cpusvn, pcesvn)] = pck.private_numbers().private_value
    assert len(set(keys.values())) == 3
    # Deterministic: the same TCB gives the same key (RFC 6979 signatures repeat too).
    assert box.pce.certify_enclave(init.report, BOOT_CPUSVN, PCE_ISVSVN) == box.pce.certify_enclave(
        init.report, BOOT_CPUSVN, PCE_ISVSVN
    )


def test_another_machine_has_other_pck_keys(builds: Builds) -> None:
    a, b = boot(builds, 1), boot(builds, 2)
    ia = a.qe.gen_att_key(a.pce.target_info())
    sig_b_key = pck_private_key(expected_provision_key(b.machine, builds.pce, BOOT_CPUSVN, PCE_ISVSVN))
    sig = a.pce.certify_enclave(ia.report, BOOT_CPUSVN, PCE_ISVSVN)
    assert not verifies(sig_b_key.public_key(), sig, ia.report[:384])
    assert (
        a.pce.get_pc_info(ia.report).ppid
        != b.pce.get_pc_info(b.qe.gen_att_key(b.pce.target_info()).report).ppid
    )


def test_get_pc_info_gives_the_ppid_pcesvn_and_pce_id(box: Box) -> None:
    init = box.qe.gen_att_key(box.pce.target_info())
    info = box.pce.get_pc_info(init.report)
    assert info.ppid == ppid_from_provision_key(expected_provision_key(box.machine, box.b.pce, bytes(16), 0))
    assert (info.pce_isvsvn, info.pce_id) == (PCE_ISVSVN, bytes(2))


def test_pce_refuses_requests_it_must_not_serve(box: Box) -> None:
    pce_ti = box.pce.target_info()
    init = box.qe.gen_att_key(pce_ti)

    def certify_status(
        report: bytes, cpusvn: bytes = BOOT_CPUSVN, pcesvn: int = PCE_ISVSVN
    ) -> tuple[int, int]:
        with pytest.raises(AeCallError) as exc:
            box.pce.certify_enclave(report, cpusvn, pcesvn)
        return exc.value.status, exc.value.leaf_rax

    forged = bytearray(init.report)
    forged[416] ^= 1  # MAC
    assert certify_status(bytes(forged))[0] == PceError.SGX_PCE_INVALID_REPORT
    edited = bytearray(init.report)
    edited[320] ^= 1  # REPORTDATA: the MAC no longer matches
    assert certify_status(bytes(edited))[0] == PceError.SGX_PCE_INVALID_REPORT
    to_app = box.qe.gen_att_key(box.app.target_info()).report  # MACed for another enclave
    assert certify_status(to_app)[0] == PceError.SGX_PCE_INVALID_REPORT
    no_provision = box.app.report(pce_ti)  # genuine, but the app lacks PROVISIONKEY
    assert certify_status(no_provision)[0] == PceError.SGX_PCE_INVALID_PRIVILEGE
    with pytest.raises(AeCallError) as exc:
        box.pce.get_pc_info(no_provision)
    assert exc.value.status == PceError.SGX_PCE_INVALID_PRIVILEGE
    # A TCB the platform/PCE cannot reach: EGETKEY refuses, the PCE says INVALID_TCB.
    assert certify_status(init.report, late_cpusvn(3)) == (
        PceError.SGX_PCE_INVALID_TCB,
        SgxStatus.SGX_INVALID_CPUSVN,
    )
    assert certify_status(init.report, BOOT_CPUSVN, PCE_ISVSVN + 1) == (
        PceError.SGX_PCE_INVALID_TCB,
        SgxStatus.SGX_INVALID_ISVSVN,
    )


def test_enclave_checks_buffer_sizes_and_function_numbers(box: Box) -> None:
    short = box.pce.ecall(AeFunction.PCE_CERTIFY_ENCLAVE, [bytes(18), bytes(431)], out_size=64)
    assert short.status == PceError.SGX_PCE_INVALID_PARAMETER
    small_out = box.pce.ecall(AeFunction.SELF_REPORT, out_size=100)
    assert small_out.status == PceError.SGX_PCE_INVALID_PARAMETER and small_out.out_len == Report.SIZE
    assert box.qe.ecall(9).status == SgxError.SGX_ERROR_INVALID_FUNCTION
    assert box.app.ecall(AeFunction.APP_REPORT, [bytes(512), bytes(65)], out_size=432).status == (
        SgxError.SGX_ERROR_INVALID_PARAMETER
    )


def test_a_call_block_inside_elrange_is_ignored(box: Box) -> None:
    # sgx_is_outside_enclave: the enclave does not write through a pointer into itself.
    encl = box.app.encl
    ret = encl.call(encl.base + PAGE_SIZE)  # an address inside ELRANGE as RDI
    assert ret == 0 and encl.run.function == uapi.EEXIT
    assert box.app.self_report().mrenclave == box.b.app.mrenclave


def test_enclave_lost_when_it_cannot_be_entered(box: Box) -> None:
    box.qe.proc.munmap(box.qe.encl.base, PAGE_SIZE)  # the TCS mapping is gone
    with pytest.raises(EnclaveLost) as exc:
        box.qe.self_report()
    assert exc.value.vector == 14 and exc.value.status == SgxError.SGX_ERROR_ENCLAVE_LOST
    box.psw.exit()
    with pytest.raises(EnclaveLost):
        box.pce.self_report()
    assert not box.pce.alive


# ------------------------------------------------------------------------------ the QE


def test_qe_report_to_the_pce_binds_the_attestation_key(box: Box) -> None:
    pce_ti = box.pce.target_info()
    a = box.qe.gen_att_key(pce_ti)
    b = box.qe.gen_att_key(pce_ti, b"other auth data")
    report = Report.unpack(a.report)
    assert report.reportdata == qe_report_data(a.attest_pub, DEFAULT_QE_AUTH_DATA)
    assert report.reportdata == hashlib.sha256(a.attest_pub + DEFAULT_QE_AUTH_DATA).digest() + bytes(32)
    assert (
        Report.unpack(b.report).reportdata[:32] == hashlib.sha256(b.attest_pub + b"other auth data").digest()
    )
    assert a.attest_pub == b.attest_pub  # the key depends on the TCB, not on the auth data
    public_key_from_raw(a.attest_pub)  # a point on P-256
    assert report.cpusvn == BOOT_CPUSVN and report.isvsvn == QE_ISVSVN
    assert target_info_of(a.report) == box.qe.target_info()


@pytest.mark.parametrize("version", [3, 4])
def test_quote_layout_matches_the_library_builder(box: Box, version: int) -> None:
    qe_report, pce_sig, cert = certify(box)
    app_report = box.app.report(box.qe.target_info(), b"nonce-1")
    quote = box.qe.get_quote(app_report, cert, PCE_ISVSVN, version=version)
    q = parse_quote(quote)
    attest_pub = box.qe.gen_att_key(box.pce.target_info()).attest_pub
    assert q.version == version and q.header.qe_svn == QE_ISVSVN and q.header.pce_svn == PCE_ISVSVN
    assert q.report_body.pack() == app_report[:384]
    assert q.report_body.report_data == b"nonce-1".ljust(64, b"\0")
    assert q.attest_pub_key == attest_pub
    assert ecdsa_raw_verify(public_key_from_raw(attest_pub), q.signature, q.signed_data)
    assert q.raw_qe_report_body == qe_report[:384] and q.qe_report_sig == pce_sig
    assert q.qe_auth_data == DEFAULT_QE_AUTH_DATA and q.pck_chain_pem == CHAIN
    assert q.outer_cert_type == (
        CertDataType.PCK_CERT_CHAIN if version == 3 else CertDataType.ECDSA_SIG_AUX_DATA
    )
    # Byte for byte the attest library's quote, except the signature and key (another key here).
    build = build_quote_v3 if version == 3 else build_quote_v4
    other = build(
        qe_svn=QE_ISVSVN,
        pce_svn=PCE_ISVSVN,
        report_body=app_report[:384],
        attest_key=derive_p256_key(random.Random(5)),
        qe_report_body=qe_report[:384],
        qe_report_sig=pce_sig,
        qe_auth_data=DEFAULT_QE_AUTH_DATA,
        pck_chain_pem=CHAIN,
        user_data=q.header.user_data,
    )
    assert len(other) == len(quote)
    assert other[:436] == quote[:436]
    assert other[436 + 128 :] == quote[436 + 128 :]
    assert q.header.user_data[16:] == bytes(4) and q.header.user_data[:16] != bytes(16)  # QE_ID
    # Deterministic: the same inputs give the same quote.
    assert box.qe.get_quote(app_report, cert, PCE_ISVSVN, version=version) == quote


def _flip(report: bytes, index: int) -> bytes:
    out = bytearray(report)
    out[index] ^= 0x01
    return bytes(out)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(index=st.integers(0, 431))
def test_qe_refuses_any_modified_report(box: Box, index: int) -> None:
    _, _, cert = certify(box)
    report = box.app.report(box.qe.target_info(), b"x")
    with pytest.raises(AeCallError) as exc:
        box.qe.get_quote(_flip(report, index), cert, PCE_ISVSVN)
    assert exc.value.status == Quote3Error.SGX_QL_INVALID_REPORT


def test_qe_refuses_forged_and_misdirected_reports(box: Box) -> None:
    _, _, cert = certify(box)
    genuine = box.app.report(box.qe.target_info())
    forged = Report.unpack(genuine)
    cases = {
        "all zero": bytes(432),
        "targeted at the PCE": box.app.report(box.pce.target_info()),
        "other KEYID": dataclasses.replace(forged, keyid=bytes(32)).pack(),
        "other MRENCLAVE, same MAC": dataclasses.replace(forged, mrenclave=bytes(32)).pack(),
    }
    for name, report in cases.items():
        with pytest.raises(AeCallError) as exc:
            box.qe.get_quote(report, cert, PCE_ISVSVN)
        assert exc.value.status == Quote3Error.SGX_QL_INVALID_REPORT, name
    box.qe.get_quote(genuine, cert, PCE_ISVSVN)


def test_qe_refuses_certification_data_for_another_key(box: Box) -> None:
    qe_report, sig, cert = certify(box)
    report = box.app.report(box.qe.target_info())
    other_auth = certification_data(qe_report[:384], sig, b"different", CHAIN)
    pce_body = box.pce.self_report().body()
    not_the_qe = certification_data(pce_body, sig, DEFAULT_QE_AUTH_DATA, CHAIN)
    for bad in (other_auth, not_the_qe, cert[:-1], cert[:300], b""):
        with pytest.raises(AeCallError) as exc:
            box.qe.get_quote(report, bad, PCE_ISVSVN)
        assert exc.value.status == Quote3Error.SGX_QL_ATT_KEY_CERT_DATA_INVALID
    with pytest.raises(InvalidArgument):
        box.qe.get_quote(report, cert, PCE_ISVSVN, version=5)
    raw = box.qe.ecall(AeFunction.QE_GET_QUOTE, [report, cert], arg0=5, arg1=PCE_ISVSVN, out_size=8192)
    assert raw.status == Quote3Error.SGX_QL_ERROR_INVALID_PARAMETER


def test_call_block_is_byte_exact() -> None:
    assert ctypes.sizeof(ae_call) == 14 * 8
    assert [f[0] for f in ae_call._fields_][:2] == ["function", "status"]


# ------------------------------------------------------------------------------ sealing


def test_seal_roundtrip_and_tamper(box: Box) -> None:
    blob = box.app.seal(b"top secret")
    assert len(blob) == SEALED_DATA_HEADER_SIZE + len(b"top secret")
    assert blob[8:24] == BOOT_CPUSVN and int.from_bytes(blob[:2], "little") == KeyName.SEAL
    assert box.app.unseal(blob) == b"top secret"
    assert box.app.unseal(box.app.seal(b"")) == b""
    for index in (SEALED_DATA_HEADER_SIZE, 550, 40):  # ciphertext, tag, KEYID
        with pytest.raises(AeCallError) as exc:
            box.app.unseal(_flip(blob, index))
        assert exc.value.status == SgxError.SGX_ERROR_MAC_MISMATCH
    # KEYNAME, a KEYPOLICY bit sgx_seal_data never sets (NOISVPRODID), reserved fields.
    for index in (0, 2, 6, 100):
        with pytest.raises(AeCallError) as exc:
            box.app.unseal(_flip(blob, index) if index != 2 else blob[:2] + b"\x04\x00" + blob[4:])
        assert exc.value.status == SgxError.SGX_ERROR_INVALID_PARAMETER


def test_another_signer_cannot_unseal(box: Box) -> None:
    blob = box.app.seal(b"mine")
    other = build_app(generate_signing_key(Rng(99).stream("isv")))
    stranger = load_app(Process(box.kernel, "stranger"), other)
    with pytest.raises(AeCallError) as exc:
        stranger.unseal(blob)
    assert exc.value.status == SgxError.SGX_ERROR_MAC_MISMATCH


def test_seal_key_above_the_platform_or_enclave_svn_is_refused(box: Box) -> None:
    with pytest.raises(AeCallError) as exc:
        box.app.seal(b"x", cpusvn=late_cpusvn(3), isvsvn=1)
    assert (exc.value.status, exc.value.leaf_rax) == (
        SgxError.SGX_ERROR_INVALID_CPUSVN,
        SgxStatus.SGX_INVALID_CPUSVN,
    )
    with pytest.raises(AeCallError) as exc:
        box.app.seal(b"x", cpusvn=BOOT_CPUSVN, isvsvn=2)
    assert (exc.value.status, exc.value.leaf_rax) == (
        SgxError.SGX_ERROR_INVALID_ISVSVN,
        SgxStatus.SGX_INVALID_ISVSVN,
    )
    # An older CPUSVN is allowed: the key of that TCB.
    old = box.app.seal(b"y", cpusvn=late_cpusvn(1), isvsvn=0)
    assert old[8:24] == late_cpusvn(1) and box.app.unseal(old) == b"y"
    with pytest.raises(InvalidArgument):
        box.app.seal(b"x", cpusvn=BOOT_CPUSVN)


def test_sealing_across_an_update_and_a_reset(builds: Builds) -> None:
    box = boot(builds)
    before = box.app.seal(b"sealed at svn 2")
    raise_cpusvn(box, late=3)

    # After the update: the old blob names the older CPUSVN, whose key EGETKEY still gives.
    app = load_app(Process(box.kernel, "app"), builds.app)
    assert app.unseal(before) == b"sealed at svn 2"
    after = app.seal(b"sealed at svn 3")
    assert after[8:24] == late_cpusvn(3)
    assert app.unseal(after) == b"sealed at svn 3"
    old_tcb = app.seal(b"for the old microcode", cpusvn=BOOT_CPUSVN, isvsvn=1)

    # Cold reset: the early (older) microcode is back and CPUSVN with it.
    exit_all(box.kernel)
    box.machine.cold_reset()
    kernel = Kernel(box.machine)
    app = load_app(Process(kernel, "app"), builds.app)
    assert box.machine.cpusvn == BOOT_CPUSVN
    with pytest.raises(AeCallError) as exc:
        app.unseal(after)
    assert (exc.value.status, exc.value.leaf_rax) == (
        SgxError.SGX_ERROR_INVALID_CPUSVN,
        SgxStatus.SGX_INVALID_CPUSVN,
    )
    assert app.unseal(before) == b"sealed at svn 2"
    assert app.unseal(old_tcb) == b"for the old microcode"
    assert kernel.log.warn_count == 0


def test_pck_key_and_attestation_key_follow_the_cpusvn(builds: Builds) -> None:
    box = boot(builds)
    before = box.qe.gen_att_key(box.pce.target_info())
    sig_before = box.pce.certify_enclave(before.report, BOOT_CPUSVN, PCE_ISVSVN)
    raise_cpusvn(box, late=3)
    psw = Process(box.kernel, "aesm")
    pce, qe = load_pce(psw, builds.pce), load_qe(psw, builds.qe)
    after = qe.gen_att_key(pce.target_info())
    assert Report.unpack(after.report).cpusvn == late_cpusvn(3)
    assert after.attest_pub != before.attest_pub
    new_sig = pce.certify_enclave(after.report, late_cpusvn(3), PCE_ISVSVN)
    new_key = pck_private_key(expected_provision_key(box.machine, builds.pce, late_cpusvn(3), PCE_ISVSVN))
    old_key = pck_private_key(expected_provision_key(box.machine, builds.pce, BOOT_CPUSVN, PCE_ISVSVN))
    assert verifies(new_key.public_key(), new_sig, after.report[:384])
    assert not verifies(old_key.public_key(), new_sig, after.report[:384])
    assert verifies(old_key.public_key(), sig_before, before.report[:384])
    # The old TCB's key is still derivable after the update (an older CPUSVN).
    assert verifies(
        old_key.public_key(), pce.certify_enclave(after.report, BOOT_CPUSVN, PCE_ISVSVN), after.report[:384]
    )
    assert pce.get_pc_info(after.report).ppid == ppid_from_provision_key(
        expected_provision_key(box.machine, builds.pce, bytes(16), 0)
    )


def test_host_wrappers_reject_wrong_types(box: Box) -> None:
    with pytest.raises(InvalidArgument):
        box.app.report("ti")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        box.app.report(Targetinfo(), bytes(65))
    with pytest.raises(InvalidArgument):
        box.pce.certify_enclave(bytes(432), bytes(15), 1)
    with pytest.raises(InvalidArgument):
        box.pce.certify_enclave(bytes(432), bytes(16), 1 << 16)
    with pytest.raises(InvalidArgument):
        box.qe.gen_att_key(bytes(512))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        certification_data(bytes(383), bytes(64), b"", b"")
    with pytest.raises(InvalidArgument):
        box.app.ecall(1, [b"", b"", b"", b""])
