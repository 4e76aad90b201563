"""sim.attestation: a running simulated machine turned into evidence, judged by a relying party.

The world (Intel's PKI, PCS and TCB model) registers a platform from the machine's fuses; the
platform's PCE and QE run through the driver; quotes are verified by our verifier and
cross-checked with dcap-qvl. The central story: a TCB recovery makes the boot TCB OutOfDate, a
late microcode load + EUPDATESVN (the kernel's real path, ``k.svn``) raises CPUSVN and destroys
every enclave, the quoting enclaves are reloaded, a new PCK certificate (with a new key) is
selected and the platform is UpToDate again; data sealed before the update is still readable.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import dcap_qvl
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from sgxsim.attest import (
    BrokerPolicy,
    DecisionReason,
    EnclaveRule,
    QeTcbLevel,
    TcbLevel,
    TcbStatus,
    VerificationReason,
    VerifiedQuote,
    ecdsa_raw_verify,
    parse_quote,
)
from sgxsim.errors import InvalidArgument, VerificationError
from sgxsim.hw.arch import KeyName, KeyPolicy, Keyrequest, SgxStatus, Vector
from sgxsim.hw.cpu import MicrocodePatch
from sgxsim.hw.machine import Machine, MachineConfig
from sgxsim.kernel import uapi
from sgxsim.kernel.encl import SGX_ENCL_DEAD, SgxEncl
from sgxsim.kernel.main import Kernel, validate_epc
from sgxsim.kernel.policy import SvnPolicy
from sgxsim.kernel.process import Process
from sgxsim.kernel.svn import SvnConfig
from sgxsim.rand import Rng
from sgxsim.sdk.quoting import (
    PCE_ISVSVN,
    AeCallError,
    AppEnclave,
    EnclaveLost,
    Quote3Error,
    SgxError,
    build_app,
    load_app,
    pck_private_key,
)
from sgxsim.sdk.sign import generate_signing_key
from sgxsim.sim.attestation import (
    DEFAULT_EPOCH,
    AppEnclaveLost,
    AttestationResult,
    AttestationWorld,
    EnclaveHandle,
    Platform,
    TcbDescription,
    TcbRecovery,
    default_tcb_description,
    driver_enclave,
    sgx_tcb_components,
)

DAY_NS = 86_400 * 10**9
BOOT = bytes(sgx_tcb_components(2))
UPDATED = bytes(sgx_tcb_components(3))


@pytest.fixture(scope="module")
def intel_key() -> rsa.RSAPrivateKey:
    return generate_signing_key(Rng(5).stream("intel"))


@pytest.fixture(scope="module")
def isv_key() -> rsa.RSAPrivateKey:
    return generate_signing_key(Rng(5).stream("isv"))


@dataclass
class Setup:
    world: AttestationWorld
    machine: Machine
    kernel: Kernel
    platform: Platform
    app: AppEnclave
    isv_key: rsa.RSAPrivateKey
    #: Free EPC pages right after boot (before any process).
    free_at_boot: int

    def rebuild_app(self) -> AppEnclave:
        """The application's process rebuilds its enclave (a new process if it exited)."""
        old = self.app
        if old.proc.exited:
            proc = Process(self.kernel, "app")
        else:
            old.close()
            proc = old.proc
        self.app = load_app(proc, old.build)
        return self.app


def make(
    intel_key: rsa.RSAPrivateKey,
    isv_key: rsa.RSAPrivateKey,
    *,
    tcb: TcbDescription | None = None,
    config: MachineConfig | None = None,
    svn: SvnConfig | None = None,
    seed: int = 1,
) -> Setup:
    world = AttestationWorld(seed, tcb, intel_key=intel_key)
    machine = Machine(config or MachineConfig(), Rng(seed))
    kernel = Kernel(machine, svn=svn)
    free = kernel.sgx_nr_free_pages.read()
    platform = world.add_platform(machine, kernel)
    app = load_app(Process(kernel, "app"), build_app(isv_key))
    return Setup(world, machine, kernel, platform, app, isv_key, free)


@pytest.fixture
def setup(intel_key: rsa.RSAPrivateKey, isv_key: rsa.RSAPrivateKey) -> Iterator[Setup]:
    s = make(intel_key, isv_key)
    yield s
    assert s.kernel.log.warn_count == 0, s.kernel.log.format()


def qvl(world: AttestationWorld, result: AttestationResult, at_ns: int) -> dcap_qvl.VerifiedReport:
    collateral = dcap_qvl.QuoteCollateralV3(**result.collateral.as_dcap_qvl_kwargs())
    return dcap_qvl.verify_with_root_ca(
        result.quote, collateral, world.root_der, int(world.datetime_at(at_ns).timestamp())
    )


def spki(key: PublicKeyTypes) -> bytes:
    """A public key's DER SubjectPublicKeyInfo (to compare keys)."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def verified(result: AttestationResult) -> VerifiedQuote:
    assert isinstance(result.verification, VerifiedQuote), result.verification
    return result.verification


def exit_all(kernel: Kernel) -> None:
    for proc in list(kernel.processes.values()):
        if not proc.exited:
            proc.exit()


def late_patch(machine: Machine, late: int) -> MicrocodePatch:
    """A newer patch raising the "SGX Late Microcode Update" SVN to ``late``."""
    return MicrocodePatch.with_svns(machine.cpus[0].ucode.revision + 1, base=2, late_microcode=late)


def kernel_encl(handle: EnclaveHandle | None) -> SgxEncl:
    assert handle is not None
    encl = driver_enclave(handle)
    assert encl is not None
    return encl


def assert_clean_after_exit(s: Setup) -> None:
    """Every process exits: the EPC is empty again, accounting agrees, no WARN was logged."""
    exit_all(s.kernel)
    assert not s.platform.running
    report = validate_epc(s.kernel, expect_empty=True)
    assert report, report.problems
    assert s.kernel.sgx_nr_free_pages.read() == s.free_at_boot == s.kernel.npages
    assert s.kernel.sgx_usage_count == 0 and not s.kernel.enclaves
    assert s.kernel.log.warn_count == 0, s.kernel.log.format()


# ------------------------------------------------------------------------------ the default world


@pytest.mark.parametrize("version", [3, 4])
def test_default_platform_attests_with_the_boot_tcb(setup: Setup, version: int) -> None:
    nonce = hashlib.sha256(b"relying party nonce").digest()
    result = setup.platform.attest(setup.app, at_ns=0, report_data=nonce, version=version)
    v = verified(result)
    assert v.status is TcbStatus.SW_HARDENING_NEEDED and v.accepted
    assert v.advisory_ids == ("INTEL-SA-00615",)
    assert v.quote.version == version
    assert v.report_data == nonce + bytes(32)
    assert v.mr_enclave == setup.app.build.mrenclave and v.mr_signer == setup.app.build.mrsigner
    assert v.report_body.cpu_svn == BOOT == setup.machine.cpusvn
    assert (v.pck.cpusvn, v.pck.pcesvn, v.pck.ppid) == (BOOT, PCE_ISVSVN, setup.platform.ppid)
    assert v.quote.qe_report_body.mr_signer == setup.world.qe_build.mrsigner
    assert result.decision.released and result.decision.reason is DecisionReason.RELEASED
    assert result.decision.secret == setup.world.broker_secret
    if version == 3:  # dcap-qvl judges the same evidence the same way
        theirs = qvl(setup.world, result, 0)
        assert theirs.status == "SWHardeningNeeded" and list(theirs.advisory_ids) == ["INTEL-SA-00615"]


def test_registration_issues_certificates_the_platform_can_reach(
    intel_key: rsa.RSAPrivateKey, isv_key: rsa.RSAPrivateKey
) -> None:
    base = default_tcb_description()
    needs_new_pce = TcbLevel(
        sgx_tcb_components(2), PCE_ISVSVN + 1, dt.datetime(2025, 1, 1, tzinfo=dt.UTC), TcbStatus.UP_TO_DATE
    )
    future = TcbLevel(
        sgx_tcb_components(4), PCE_ISVSVN, dt.datetime(2025, 2, 1, tzinfo=dt.UTC), TcbStatus.UP_TO_DATE
    )
    tcb = TcbDescription(
        levels=(*base.levels, needs_new_pce, future), qe_levels=base.qe_levels, tcb_evaluation_data_number=17
    )
    s = make(intel_key, isv_key, tcb=tcb)
    certs = s.platform.registered.certs
    issued = {(c.extension.cpusvn, c.extension.pcesvn) for c in certs}
    reachable = {(bytes(lv.components), lv.pcesvn) for lv in tcb.levels if lv.pcesvn <= PCE_ISVSVN}
    assert issued == reachable and (bytes(sgx_tcb_components(2)), PCE_ISVSVN + 1) not in issued
    # Intel's offline derivation gives each certificate the key the PCE derives for its TCB.
    for cert in certs:
        key = pck_private_key(
            s.world.provision_key(s.machine.fused_secret, cert.extension.cpusvn, cert.extension.pcesvn)
        )
        assert spki(cert.cert.public_key()) == spki(key.public_key())
    # The PPID Intel computes is the one the PCE reports; re-registering issues nothing new.
    assert s.platform.pce_info().ppid == s.platform.ppid == s.world.intel_ppid(s.machine)
    assert s.world.register(s.machine) is s.platform.registered and len(certs) == len(reachable)
    # The selected certificate is the boot level (the future one is above the raw TCB).
    assert s.platform.pck_certificate().extension.cpusvn == BOOT
    assert s.platform.raw_tcb() == (BOOT, PCE_ISVSVN)


def test_the_pce_signs_with_the_selected_certificates_key(setup: Setup) -> None:
    result = setup.platform.attest(setup.app, at_ns=0)
    q = parse_quote(result.quote)
    pub = setup.platform.pck_certificate().cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    assert ecdsa_raw_verify(pub, q.qe_report_sig, q.raw_qe_report_body)
    assert q.pck_chain_pem == setup.world.pki.pck_chain_pem(setup.platform.pck_certificate())


# ------------------------------------------------------------------------------ recovery and update


def test_recovery_then_late_load_and_eupdatesvn(setup: Setup) -> None:
    s = setup
    world, platform = s.world, s.platform
    boot_cert = platform.pck_certificate()
    stale_report = s.app.report(platform.qe_target_info())

    # Intel publishes a TCB recovery for late-microcode SVN 3.
    t1 = 10 * DAY_NS
    world.publish_recovery(TcbRecovery.late_microcode(3), at_ns=t1)
    assert world.tcb_model.tcb_evaluation_data_number == world.qe_identity.tcb_evaluation_data_number == 18
    assert any(c.extension.cpusvn == UPDATED for c in platform.registered.certs)
    result = platform.attest(s.app, at_ns=t1)
    v = verified(result)
    assert v.status is TcbStatus.OUT_OF_DATE and v.advisory_ids == ("INTEL-SA-00615", "INTEL-SA-01213")
    assert v.superseded_at == world.datetime_at(t1) and v.tcb_evaluation_data_number == 18
    assert not result.decision.released and result.decision.reason is DecisionReason.TCB_STATUS_NOT_ALLOWED
    theirs = qvl(world, result, t1)
    assert theirs.status == "OutOfDate" and tuple(theirs.advisory_ids) == v.advisory_ids
    rule = (EnclaveRule(mrenclave=s.app.build.mrenclave),)
    grace = BrokerPolicy(rules=rule, out_of_date_grace=dt.timedelta(days=30))
    assert platform.attest(s.app, at_ns=t1, policy=grace).decision.reason is DecisionReason.RELEASED_IN_GRACE
    late = t1 + 31 * DAY_NS
    assert (
        platform.attest(s.app, at_ns=late, policy=grace).decision.reason
        is DecisionReason.GRACE_PERIOD_EXPIRED
    )

    # The operator loads the microcode: the kernel zaps the EPC and runs EUPDATESVN.
    assert s.kernel.svn.microcode_reload(late_patch(s.machine, 3)) == 0
    assert s.kernel.svn.updates[-1].succeeded and s.machine.cpusvn == UPDATED
    assert not platform.running
    app = s.rebuild_app()
    t2 = t1 + DAY_NS
    result = platform.attest(app, at_ns=t2)
    v = verified(result)
    new_cert = platform.pck_certificate()
    assert platform.starts == 2 and platform.raw_tcb() == (UPDATED, PCE_ISVSVN)
    assert new_cert.extension.cpusvn == UPDATED == v.pck.cpusvn == v.report_body.cpu_svn
    assert spki(new_cert.cert.public_key()) != spki(boot_cert.cert.public_key())
    assert v.pck.ppid == boot_cert.extension.ppid  # same part, same PPID
    assert v.status is TcbStatus.UP_TO_DATE and v.advisory_ids == ()
    assert result.decision.released and result.decision.reason is DecisionReason.RELEASED
    assert qvl(world, result, t2).status == "UpToDate"
    # A REPORT made before the update was MACed with the old REPORT key: the QE refuses it.
    with pytest.raises(AeCallError) as exc:
        platform.quote(stale_report)
    assert exc.value.status == Quote3Error.SGX_QL_INVALID_REPORT
    assert s.kernel.log.warn_count == 0


def up_to_date_at_boot() -> TcbDescription:
    """The default description with the boot level (late-microcode SVN 2) UpToDate."""
    base = default_tcb_description()
    boot = base.levels[0]
    levels = (
        TcbLevel(boot.components, boot.pcesvn, boot.tcb_date, TcbStatus.UP_TO_DATE),
        *base.levels[1:],
    )
    return TcbDescription(levels=levels, qe_levels=base.qe_levels, tcb_evaluation_data_number=17)


SECRET = b"customer database key, sealed at boot"
UPDATE_POLICIES = tuple(p for p in SvnPolicy if p is not SvnPolicy.NONE)


def sealed_keyrequest(blob: bytes) -> Keyrequest:
    """The KEYREQUEST an ``sgx_sealed_data_t`` carries (its first 512 bytes)."""
    return Keyrequest.unpack(blob[: Keyrequest.SIZE])


@pytest.mark.parametrize("policy", UPDATE_POLICIES)
def test_end_to_end_recovery_update_reattest_and_unseal(
    intel_key: rsa.RSAPrivateKey, isv_key: rsa.RSAPrivateKey, policy: SvnPolicy
) -> None:
    """Issue 5 item 8: boot UpToDate -> TCB recovery (OutOfDate, refused) -> late load + EUPDATESVN
    (old enclaves destroyed) -> new enclaves and a restarted QE with a new PCK certificate attest
    UpToDate and get the secret; the replayed pre-update quote stays OutOfDate; sealed data survives."""
    s = make(intel_key, isv_key, tcb=up_to_date_at_boot(), svn=SvnConfig(policy=policy))
    k, m, world, platform = s.kernel, s.machine, s.world, s.platform
    build = s.app.build

    # 1. Boot: the application enclave attests UpToDate and gets the secret; it seals its data.
    boot = platform.attest(s.app, at_ns=0, report_data=b"boot")
    v = verified(boot)
    assert v.status is TcbStatus.UP_TO_DATE and v.report_body.cpu_svn == BOOT == m.cpusvn
    assert boot.decision.released and boot.decision.secret == world.broker_secret
    blob = s.app.seal(SECRET)
    req = sealed_keyrequest(blob)
    assert (req.keyname, req.keypolicy, req.cpusvn) == (KeyName.SEAL, KeyPolicy.MRSIGNER, BOOT)
    boot_cert = platform.pck_certificate()
    assert boot_cert.extension.cpusvn == BOOT
    old_app_proc, old_aesm = s.app.proc, platform.process
    old = {name: kernel_encl(h) for name, h in (("app", s.app), ("pce", platform.pce), ("qe", platform.qe))}
    assert not any(e.flags & SGX_ENCL_DEAD for e in old.values())
    updates_at_boot = len(k.svn.updates)

    # 2. Intel publishes a TCB recovery: the same platform now quotes OutOfDate; the broker refuses.
    t1 = 10 * DAY_NS
    world.publish_recovery(TcbRecovery.late_microcode(3), at_ns=t1)
    before = platform.attest(s.app, at_ns=t1, report_data=b"before update")
    v = verified(before)
    assert v.status is TcbStatus.OUT_OF_DATE and v.advisory_ids == ("INTEL-SA-01213",)
    assert not before.decision.released and before.decision.secret is None
    assert before.decision.reason is DecisionReason.TCB_STATUS_NOT_ALLOWED
    assert qvl(world, before, t1).status == "OutOfDate"
    replay = before.quote

    # 3. The update, as each policy runs it.
    patch = late_patch(m, 3)
    if policy == "linux-6.19-on-open":
        exit_all(k)  # the operator drains every SGX user first
        assert k.sgx_usage_count == 0 and not k.enclaves
    assert k.svn.microcode_reload(patch) == 0
    assert all(lp.ucode == patch for lp in m.cpus)
    if policy == "rfc-v2-teardown":
        rec = k.svn.updates[-1]
        assert rec.trigger == "late_load"
    else:  # the late load alone does nothing SGX-specific
        assert len(k.svn.updates) == updates_at_boot and m.cpusvn == BOOT
        if policy == "explicit-trigger":
            # Nothing was disturbed: the platform still quotes, still OutOfDate.
            assert verified(platform.attest(s.app, at_ns=t1)).status is TcbStatus.OUT_OF_DATE
            assert k.svn.update_svn_store() == 0
            rec = k.svn.updates[-1]
            assert rec.trigger == "trigger" and rec.errno == 0
    if policy != "linux-6.19-on-open":
        # EUPDATESVN ran: CPUSVN rose, every enclave lost its EPC and is dead in the driver.
        assert rec.result == SgxStatus.SUCCESS and rec.cpusvn_after == UPDATED == m.cpusvn
        assert {e.id for e in old.values()} <= set(rec.enclaves_killed)
        assert all(e.flags & SGX_ENCL_DEAD for e in old.values())
        assert not platform.running and not old_app_proc.exited
        with pytest.raises(OSError) as ioc:  # the dead enclave's ioctls fail with EIO
            old_app_proc.ioctl(s.app.encl.fd, uapi.SGX_IOC_ENCLAVE_INIT, uapi.sgx_enclave_init())
        assert ioc.value.errno == errno.EIO

    # 4. The old application enclave cannot attest: a typed outcome, its process must rebuild it.
    #    The quoting service restarts on its own (under 6.19 its first open runs EUPDATESVN).
    t2 = t1 + DAY_NS
    with pytest.raises(AppEnclaveLost) as lost:
        platform.attest(s.app, at_ns=t2)
    assert isinstance(lost.value, EnclaveLost) and lost.value.status == SgxError.SGX_ERROR_ENCLAVE_LOST
    if policy == "linux-6.19-on-open":
        rec = k.svn.updates[-1]
        assert rec.trigger == "open" and rec.result == SgxStatus.SUCCESS and rec.errno == 0
        assert rec.enclaves_killed == [] and not any(e.id in k.enclaves for e in old.values())
        assert lost.value.vector == 0  # its process is gone
    else:
        assert lost.value.vector == Vector.PF  # the vDSO reported EENTER's #PF
    assert len(k.svn.updates) == updates_at_boot + 1 and m.cpusvn == UPDATED
    assert platform.running and platform.starts == 2 and platform.process is not old_aesm
    new_cert = platform.pck_certificate()
    assert platform.raw_tcb() == (UPDATED, PCE_ISVSVN) and new_cert.extension.cpusvn == UPDATED
    assert spki(new_cert.cert.public_key()) != spki(boot_cert.cert.public_key())

    # 5. The rebuilt enclave (same MRENCLAVE/MRSIGNER) attests UpToDate and gets the secret.
    app = s.rebuild_app()
    assert app.build.mrenclave == build.mrenclave and driver_enclave(app) is not old["app"]
    after = platform.attest(app, at_ns=t2, report_data=b"after update")
    v = verified(after)
    assert v.status is TcbStatus.UP_TO_DATE and v.advisory_ids == ()
    assert v.report_body.cpu_svn == v.pck.cpusvn == UPDATED and v.pck.ppid == platform.ppid
    assert v.mr_enclave == build.mrenclave and v.mr_signer == build.mrsigner
    assert after.decision.released and after.decision.secret == world.broker_secret
    assert qvl(world, after, t2).status == "UpToDate"
    assert platform.starts == 2

    # 6. The pre-update quote, replayed with fresh collateral: still OutOfDate, still refused.
    collateral = world.collateral(platform.ca, t2)
    old_v = world.verify(replay, collateral, t2)
    assert old_v.status is TcbStatus.OUT_OF_DATE and old_v.report_body.cpu_svn == BOOT
    assert old_v.pck.cpusvn == BOOT
    policy_rp = BrokerPolicy(rules=(EnclaveRule(mrenclave=build.mrenclave),))
    refused = world.broker(policy_rp).request(replay, collateral, world.datetime_at(t2))
    assert not refused.released and refused.reason is DecisionReason.TCB_STATUS_NOT_ALLOWED

    # 7. Sealed data survives: the blob names the boot CPUSVN, whose SEAL key stays derivable.
    assert app.unseal(blob) == SECRET
    fresh = app.seal(SECRET)
    assert sealed_keyrequest(fresh).cpusvn == UPDATED and app.unseal(fresh) == SECRET
    assert app.unseal(app.seal(b"x", cpusvn=BOOT, isvsvn=build.isvsvn)) == b"x"
    with pytest.raises(AeCallError) as above:
        app.seal(b"x", cpusvn=bytes(sgx_tcb_components(4)), isvsvn=build.isvsvn)
    assert above.value.status == SgxError.SGX_ERROR_INVALID_CPUSVN

    # 8. Everything exits: the EPC is as at boot, no WARN.
    assert_clean_after_exit(s)


def test_a_dead_quoting_service_restarts_before_use(setup: Setup) -> None:
    """After a teardown the platform answers queries with the new raw TCB without an attestation.

    No recovery was published, so Intel has no certificate for late SVN 3: PCKCertSelection
    picks the highest one the raw TCB dominates, the boot level (same key as before).
    """
    s = setup
    boot_cert = s.platform.pck_certificate()
    assert s.kernel.svn.microcode_reload(late_patch(s.machine, 3)) == 0
    assert not s.platform.running and s.platform.starts == 1
    assert s.platform.raw_tcb() == (UPDATED, PCE_ISVSVN) and s.platform.starts == 2
    assert s.platform.pck_certificate() == boot_cert
    app = s.rebuild_app()
    v = verified(s.platform.attest(app, at_ns=0))
    assert v.report_body.cpu_svn == UPDATED and v.pck.cpusvn == BOOT
    assert v.status is TcbStatus.SW_HARDENING_NEEDED and s.platform.starts == 2
    # The old service's process was ended and its dead enclaves released.
    assert [p.name for p in s.kernel.processes.values() if not p.exited].count("aesm_service") == 1
    assert_clean_after_exit(s)


def test_recoveries_in_the_description_are_published_at_build(
    intel_key: rsa.RSAPrivateKey, isv_key: rsa.RSAPrivateKey
) -> None:
    base = default_tcb_description()
    when = dt.datetime(2025, 5, 13, tzinfo=dt.UTC)
    tcb = TcbDescription(
        levels=base.levels,
        qe_levels=base.qe_levels,
        tcb_evaluation_data_number=17,
        recoveries=(TcbRecovery.late_microcode(3, date=when, advisory_ids=("INTEL-SA-00999",)),),
    )
    s = make(intel_key, isv_key, tcb=tcb)
    v = verified(s.platform.attest(s.app, at_ns=0))
    assert v.status is TcbStatus.OUT_OF_DATE and v.superseded_at == when
    assert v.advisory_ids == ("INTEL-SA-00615", "INTEL-SA-00999") and v.tcb_evaluation_data_number == 18


# ------------------------------------------------------------------------------ other platforms


def test_a_platform_below_every_level_gets_no_certificate(
    intel_key: rsa.RSAPrivateKey, isv_key: rsa.RSAPrivateKey
) -> None:
    old = MachineConfig(early_microcode=MicrocodePatch.with_svns(0xD000001, base=0, late_microcode=0))
    s = make(intel_key, isv_key, config=old)
    with pytest.raises(AeCallError) as exc:
        s.platform.start()
    assert exc.value.status == Quote3Error.SGX_QL_NO_PLATFORM_CERT_DATA
    assert not s.platform.running and s.kernel.processes.keys() == {s.app.proc.pid}


def test_a_revoked_tcb_is_genuine_but_refused(
    intel_key: rsa.RSAPrivateKey, isv_key: rsa.RSAPrivateKey
) -> None:
    revoked = MachineConfig(early_microcode=MicrocodePatch.with_svns(0xD000002, base=1, late_microcode=1))
    s = make(intel_key, isv_key, config=revoked)
    result = s.platform.attest(s.app, at_ns=0)
    v = verified(result)
    assert v.status is TcbStatus.REVOKED and not v.accepted and v.pck.pcesvn == 11
    assert result.decision.reason is DecisionReason.TCB_REVOKED
    with pytest.raises(ValueError, match="TCB status is invalid: Revoked"):
        qvl(s.world, result, 0)


def test_quoting_enclaves_are_reloaded_after_loss(setup: Setup) -> None:
    s = setup
    first = verified(s.platform.attest(s.app, at_ns=0))
    assert s.platform.starts == 1
    # The aesm process dies: the next request reloads the PCE and QE.
    aesm = [p for p in s.kernel.processes.values() if p.name == "aesm_service"]
    assert len(aesm) == 1
    aesm[0].exit()
    assert not s.platform.running
    again = verified(s.platform.attest(s.app, at_ns=1))
    assert s.platform.starts == 2
    assert again.quote.attest_pub_key == first.quote.attest_pub_key  # same TCB, same key
    # The QE can no longer be entered (its TCS mapping is gone): the quote call reloads it.
    qe = s.platform.qe
    assert qe is not None
    qe.proc.munmap(qe.encl.base, 4096)
    verified(s.platform.attest(s.app, at_ns=2))
    assert s.platform.starts == 3
    s.platform.stop()
    assert not s.platform.running and all(p.name != "aesm_service" for p in s.kernel.processes.values())


def test_platform_refuses_a_forged_report(setup: Setup) -> None:
    report = bytearray(setup.app.report(setup.platform.qe_target_info()))
    report[64] ^= 0x80  # MRENCLAVE
    with pytest.raises(AeCallError) as exc:
        setup.platform.quote(bytes(report))
    assert exc.value.status == Quote3Error.SGX_QL_INVALID_REPORT


def test_broker_policy_is_applied(setup: Setup) -> None:
    other = BrokerPolicy(rules=(EnclaveRule(mrenclave=bytes(32)),))
    result = setup.platform.attest(setup.app, at_ns=0, policy=other)
    assert result.verified is not None and result.decision.reason is DecisionReason.IDENTITY_MISMATCH
    strict = BrokerPolicy(
        rules=(EnclaveRule(mrenclave=setup.app.build.mrenclave),),
        allowed_statuses=frozenset({TcbStatus.UP_TO_DATE}),
    )
    assert (
        setup.platform.attest(setup.app, at_ns=0, policy=strict).decision.reason
        is DecisionReason.TCB_STATUS_NOT_ALLOWED
    )


# ------------------------------------------------------------------------------ time and determinism


def test_simulated_time_drives_every_date(setup: Setup) -> None:
    w = setup.world
    assert w.datetime_at(0) == DEFAULT_EPOCH
    assert w.datetime_at(1_500) == DEFAULT_EPOCH + dt.timedelta(microseconds=1)
    with pytest.raises(InvalidArgument):
        w.datetime_at(-1)
    result = setup.platform.attest(setup.app, at_ns=0)
    issued = w.datetime_at(0)
    assert '"issueDate":"2025-06-01T00:00:00Z"' in result.collateral.tcb_info
    # Collateral issued at t=0 is stale 31 days later; fresh collateral then verifies.
    later = 31 * DAY_NS
    with pytest.raises(VerificationError) as exc:
        w.verify(result.quote, result.collateral, later)
    assert exc.value.reason in (VerificationReason.TCB_INFO_EXPIRED, VerificationReason.CRL_EXPIRED)
    assert (
        w.verify(result.quote, w.collateral(setup.platform.ca, later), later).status
        is TcbStatus.SW_HARDENING_NEEDED
    )
    assert issued < w.datetime_at(later)


def test_same_seed_same_evidence(intel_key: rsa.RSAPrivateKey, isv_key: rsa.RSAPrivateKey) -> None:
    a = make(intel_key, isv_key, seed=7)
    b = make(intel_key, isv_key, seed=7)
    c = make(intel_key, isv_key, seed=8)
    ra, rb, rc = (x.platform.attest(x.app, at_ns=5, report_data=b"n") for x in (a, b, c))
    assert ra.quote == rb.quote and ra.collateral == rb.collateral
    assert rc.quote != ra.quote and c.platform.ppid != a.platform.ppid


def test_bad_configuration_is_refused(setup: Setup, intel_key: rsa.RSAPrivateKey) -> None:
    base = default_tcb_description()
    with pytest.raises(InvalidArgument):
        TcbDescription(levels=(), qe_levels=base.qe_levels, tcb_evaluation_data_number=1)
    with pytest.raises(InvalidArgument):
        TcbDescription(levels=base.levels, qe_levels=(QeTcbLevel,), tcb_evaluation_data_number=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        AttestationWorld(1, epoch=dt.datetime(2025, 1, 1), intel_key=intel_key)
    with pytest.raises(InvalidArgument):
        setup.world.add_platform(setup.machine, Kernel(Machine(MachineConfig(), Rng(9))))
    with pytest.raises(InvalidArgument):
        sgx_tcb_components(256)
    with pytest.raises(InvalidArgument):
        default_tcb_description(late_microcode=0)
    with pytest.raises(InvalidArgument):
        setup.world.publish_recovery("svn 3", at_ns=0)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        setup.world.provision_key(setup.machine.fused_secret, bytes(15), 1)
