"""The attestation world: Intel's PKI and PCS with a TCB model, platform registration, and quoting.

An :class:`AttestationWorld` is Intel plus a relying party, built from a seed and a
:class:`TcbDescription`: the "Intel" signing key of the architectural enclaves (the PCE and QE
of :mod:`sgxsim.sdk.quoting`), a :class:`~sgxsim.attest.TestPki`, a
:class:`~sgxsim.attest.Pcs` serving TCB Info from a :class:`~sgxsim.attest.TcbModel` and the QE
Identity, and a key broker secret. A :class:`Platform` binds one simulated
:class:`~sgxsim.hw.machine.Machine` and its :class:`~sgxsim.kernel.main.Kernel` to that world:

* **registration** (:meth:`AttestationWorld.add_platform`): Intel computes the platform's PPID and
  issues one PCK certificate per TCB level of the TCB model the platform can reach (PCESVN not
  above the PCE's ISVSVN; CPUSVN levels above the running one are issued too, they become usable
  after an update). [MODEL] of Intel's offline key derivation: Intel knows each part's fuses, so
  it derives the same PROVISION keys the CPU's EGETKEY gives the PCE --
  :func:`~sgxsim.hw.crypto.derive_key` over the machine's fused secret with the KeyDependencies
  EGETKEY builds for KEYNAME=PROVISION (the PCE's MRSIGNER, ISVPRODID and masked attributes, the
  certificate's CPUSVN and PCESVN) -- and maps them to the PCK key pair exactly as the PCE does.
  This module is the only layer that sees both a machine and the PKI;
* the **quoting service** (:meth:`Platform.start`, the role of aesmd / the DCAP quote library):
  loads the PCE and QE in their own process, has the QE generate its attestation key and report
  to the PCE, asks the PCE for the PPID and PCESVN, selects the PCK certificate for the raw TCB
  (the QE report's CPUSVN and the PCESVN) with the PCS's PCKCertSelection, and has the PCE certify
  the QE report at that certificate's TCB. After an EUPDATESVN (which empties the EPC, so the
  enclaves are reloaded) the raw TCB is new, a new certificate is selected and the PCK key
  changes. Lost enclaves are reloaded: before each use when their process is gone or the driver
  tore them down (``SGX_ENCL_DEAD``: an SVN update zapped their EPC), and once per quote when
  the QE cannot be entered for another reason;
* :meth:`Platform.attest`: REPORT of an application enclave targeted at the QE, quote, collateral
  from the PCS at the given simulated time, verification, and the key broker's decision. An
  application enclave that lost its EPC cannot make the REPORT: :class:`AppEnclaveLost` (the
  application's process must rebuild it; the quoting service is its own business).

Simulated time only: every date is ``epoch + ns`` (:meth:`AttestationWorld.datetime_at`).

Models: Intel SGX DCAP provisioning and quote generation (PCKIDRetrievalTool / PCS registration,
PCCS ``pck_cert_select``, QE3/PCE flow of ``sgx_ql_*``); attestation-and-figures.md §1.
Differs: registration is a direct call (no encrypted PPID, no PCK ID retrieval tool or
platform manifest); the PCS runs in process (its HTTP front end is
:class:`~sgxsim.attest.PcsHttpServer`). The quoting service reads the driver's
``SGX_ENCL_DEAD`` flag of its own enclaves instead of discovering the loss through a failing
ECALL (SGX_ERROR_ENCLAVE_LOST, which the DCAP library answers the same way: unload, reload,
re-certify); it costs no simulated time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.attest import (
    BrokerDecision,
    BrokerPolicy,
    CaKind,
    Collateral,
    EnclaveRule,
    KeyBroker,
    PckCertificate,
    Pcs,
    QeIdentityModel,
    QeTcbLevel,
    RegisteredPlatform,
    ReportBody,
    TcbLevel,
    TcbModel,
    TcbStatus,
    TestPki,
    VerifiedQuote,
    verify_quote,
)
from sgxsim.attest.impact import Evidence, FleetImpact, tcb_impact
from sgxsim.errors import InvalidArgument, ModelInvariantError, VerificationError
from sgxsim.hw.arch import CPUSVN_SIZE, Attributes, KeyName, Targetinfo
from sgxsim.hw.cpu import SVN_COMPONENT_LATE_MICROCODE, MicrocodePatch
from sgxsim.hw.crypto import PKCS1_SHA256_PADDING, KeyDependencies, derive_key
from sgxsim.hw.machine import Machine, MachineConfig
from sgxsim.kernel.encl import SGX_ENCL_DEAD, SgxEncl
from sgxsim.kernel.main import Kernel
from sgxsim.kernel.process import Process
from sgxsim.rand import Rng
from sgxsim.sdk.quoting import (
    DEFAULT_QE_AUTH_DATA,
    PCE_ISVSVN,
    PCE_PROVISION_KEY_ATTRIBUTEMASK,
    PCE_PROVISION_KEY_MISCMASK,
    PCE_PROVISION_KEY_XFRMMASK,
    QE_ISVSVN,
    AeCallError,
    AppEnclave,
    Attestable,
    EnclaveBuild,
    EnclaveLost,
    PceInfo,
    ProvisioningCertificationEnclave,
    QeInit,
    Quote3Error,
    QuotingEnclave,
    build_app,
    build_pce,
    build_qe,
    certification_data,
    load_app,
    load_pce,
    load_qe,
    pck_private_key,
    ppid_from_provision_key,
    target_info_of,
)
from sgxsim.sdk.sign import generate_signing_key

__all__ = [
    "DEFAULT_EPOCH",
    "DEFAULT_FMSPC",
    "AppEnclaveLost",
    "AttestationResult",
    "AttestationWorld",
    "EnclaveHandle",
    "FleetQuote",
    "Platform",
    "TcbDescription",
    "TcbRecovery",
    "default_tcb_description",
    "driver_enclave",
    "quote_fleet",
    "sgx_tcb_components",
]

UTC = dt.UTC
#: The simulated instant ``ns == 0`` maps to, unless a world is given another epoch.
DEFAULT_EPOCH = dt.datetime(2025, 6, 1, tzinfo=UTC)
#: FMSPC of the modelled part (an Ice Lake-SP value, as in attestation-and-figures.md §1.4 samples).
DEFAULT_FMSPC = bytes.fromhex("00906ED50000")
_U64 = (1 << 64) - 1
#: The host handles of the enclaves this module deals with.
EnclaveHandle = ProvisioningCertificationEnclave | QuotingEnclave | AppEnclave


def sgx_tcb_components(late_microcode: int, base: int = 2) -> tuple[int, ...]:
    """The 16 SGX TCB components (tcbType 0: the CPUSVN bytes) of a patch ``with_svns(base, late)``.

    Component 2, "SGX Late Microcode Update", is CPUSVN byte :data:`SVN_COMPONENT_LATE_MICROCODE`.
    """
    for name, value in (("late_microcode", late_microcode), ("base", base)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
            raise InvalidArgument(f"{name} must be an SVN in 0..255, got {value!r}")
    comps = [base] * CPUSVN_SIZE
    comps[SVN_COMPONENT_LATE_MICROCODE] = late_microcode
    return tuple(comps)


@dataclass(frozen=True)
class TcbRecovery:
    """A TCB Recovery event: a new UpToDate level; the levels it dominates become OutOfDate.

    ``date`` None means the simulated time the event is published at.
    """

    components: tuple[int, ...]
    pcesvn: int = PCE_ISVSVN
    advisory_ids: tuple[str, ...] = ()
    date: dt.datetime | None = None

    @classmethod
    def late_microcode(
        cls,
        svn: int,
        *,
        base: int = 2,
        pcesvn: int = PCE_ISVSVN,
        advisory_ids: Iterable[str] = ("INTEL-SA-01213",),
        date: dt.datetime | None = None,
    ) -> TcbRecovery:
        """A recovery raising the "SGX Late Microcode Update" SVN to ``svn``.

        The default advisory ID is invented for the simulation.
        """
        return cls(sgx_tcb_components(svn, base), pcesvn, tuple(advisory_ids), date)


@dataclass(frozen=True)
class TcbDescription:
    """What Intel publishes for the modelled part: TCB levels, QE levels, evaluation number.

    ``recoveries`` are published, in order, when the world is built (dated by their ``date``,
    else the epoch).
    """

    levels: tuple[TcbLevel, ...]
    qe_levels: tuple[QeTcbLevel, ...]
    tcb_evaluation_data_number: int
    fmspc: bytes = DEFAULT_FMSPC
    pce_id: bytes = bytes(2)
    recoveries: tuple[TcbRecovery, ...] = ()

    def __post_init__(self) -> None:
        if not self.levels or not all(isinstance(lv, TcbLevel) for lv in self.levels):
            raise InvalidArgument("TcbDescription.levels must be a non-empty tuple of TcbLevel")
        if not self.qe_levels or not all(isinstance(lv, QeTcbLevel) for lv in self.qe_levels):
            raise InvalidArgument("TcbDescription.qe_levels must be a non-empty tuple of QeTcbLevel")
        if not all(isinstance(r, TcbRecovery) for r in self.recoveries):
            raise InvalidArgument("TcbDescription.recoveries must be TcbRecovery values")


def default_tcb_description(*, base: int = 2, late_microcode: int = 2) -> TcbDescription:
    """TCB levels matching :class:`~sgxsim.hw.machine.MachineConfig`'s default early microcode.

    Highest first (PCESVN 13 = :data:`~sgxsim.sdk.quoting.PCE_ISVSVN`):

    * late SVN ``late_microcode``: SWHardeningNeeded [INTEL-SA-00615] (the platform at boot);
    * late SVN ``late_microcode - 1``: OutOfDate [INTEL-SA-00828, INTEL-SA-00837];
    * every component ``base - 1``, PCESVN 11: Revoked [INTEL-SA-00001].

    QE Identity: ISVSVN 8 UpToDate, 6 OutOfDate [INTEL-SA-00615]. tcbEvaluationDataNumber 17.
    A recovery (:meth:`TcbRecovery.late_microcode` with ``late_microcode + 1``) makes the boot
    level OutOfDate and the updated one UpToDate.
    """
    if late_microcode < 1 or base < 1:
        raise InvalidArgument(f"late_microcode and base must be >= 1, got {late_microcode}, {base}")
    return TcbDescription(
        levels=(
            TcbLevel(
                sgx_tcb_components(late_microcode, base),
                PCE_ISVSVN,
                dt.datetime(2024, 11, 12, tzinfo=UTC),
                TcbStatus.SW_HARDENING_NEEDED,
                ("INTEL-SA-00615",),
            ),
            TcbLevel(
                sgx_tcb_components(late_microcode - 1, base),
                PCE_ISVSVN,
                dt.datetime(2024, 3, 12, tzinfo=UTC),
                TcbStatus.OUT_OF_DATE,
                ("INTEL-SA-00828", "INTEL-SA-00837"),
            ),
            TcbLevel(
                sgx_tcb_components(base - 1, base - 1),
                11,
                dt.datetime(2019, 5, 15, tzinfo=UTC),
                TcbStatus.REVOKED,
                ("INTEL-SA-00001",),
            ),
        ),
        qe_levels=(
            QeTcbLevel(QE_ISVSVN, dt.datetime(2024, 3, 13, tzinfo=UTC), TcbStatus.UP_TO_DATE),
            QeTcbLevel(6, dt.datetime(2021, 11, 10, tzinfo=UTC), TcbStatus.OUT_OF_DATE, ("INTEL-SA-00615",)),
        ),
        tcb_evaluation_data_number=17,
    )


class AppEnclaveLost(EnclaveLost):
    """The application enclave could not make its REPORT: it lost its EPC (an SVN update tore it
    down: the vDSO reported the #PF of EENTER) or its process is gone. Its process must rebuild
    it (close the handle, load the same build again); nothing on the platform side can.

    Carries the vDSO's exception report of the original :class:`~sgxsim.sdk.quoting.EnclaveLost`
    (``vector``, ``error_code``, ``addr``). Models: SGX_ERROR_ENCLAVE_LOST as an application sees
    it from ``sgx_create_report``.
    """

    @classmethod
    def from_lost(cls, err: EnclaveLost) -> AppEnclaveLost:
        """The same loss (function, detail, vDSO exception report), typed as the application's."""
        lost = cls(err.function, err.detail, err.vector, err.error_code, err.addr)
        lost.leaf_rax = err.leaf_rax
        return lost


def driver_enclave(handle: EnclaveHandle) -> SgxEncl | None:
    """The driver's enclave behind a loaded enclave handle (None once its fd or process is gone).

    For inspection (tests, reports, the quoting service's loss check): user space itself only
    sees the fd.
    """
    encl = handle.encl
    if encl.closed or encl.proc.exited:
        return None
    file = encl.proc.fds.get(encl.fd)
    private = file.private_data if file is not None else None
    return private if isinstance(private, SgxEncl) else None


def _torn_down(handle: EnclaveHandle) -> bool:
    """The driver marked the enclave dead (SGX_ENCL_DEAD: its EPC was zapped for an SVN update)."""
    encl = driver_enclave(handle)
    return encl is not None and bool(encl.flags & SGX_ENCL_DEAD)


class AttestationResult(NamedTuple):
    """What :meth:`Platform.attest` returns: evidence, collateral, the verdict and the broker's answer."""

    quote: bytes
    collateral: Collateral
    verification: VerifiedQuote | VerificationError
    decision: BrokerDecision

    @property
    def verified(self) -> VerifiedQuote | None:
        return self.verification if isinstance(self.verification, VerifiedQuote) else None


@dataclass(frozen=True)
class _Certification:
    """The quote library's cached state: QE key report, PCE info, selected PCK cert, PCE signature."""

    init: QeInit
    pce_info: PceInfo
    raw_cpusvn: bytes
    pck: PckCertificate
    qe_report_sig: bytes
    qe_target: Targetinfo


class AttestationWorld:
    """Intel (signing key, PKI, PCS, TCB model, QE identity) and a relying party, for one seed."""

    def __init__(
        self,
        seed: int = 0,
        tcb: TcbDescription | None = None,
        *,
        epoch: dt.datetime = DEFAULT_EPOCH,
        pce_isvsvn: int = PCE_ISVSVN,
        qe_isvsvn: int = QE_ISVSVN,
        intel_key: rsa.RSAPrivateKey | None = None,
    ) -> None:
        if not isinstance(epoch, dt.datetime) or epoch.tzinfo is None:
            raise InvalidArgument(f"epoch must be a timezone-aware datetime, got {epoch!r}")
        self.tcb = tcb if tcb is not None else default_tcb_description()
        if not isinstance(self.tcb, TcbDescription):
            raise InvalidArgument(f"tcb must be a TcbDescription, got {type(self.tcb).__name__}")
        self.rng = Rng(seed)
        self.epoch = epoch.astimezone(UTC)
        #: Intel's architectural-enclave signing key (RSA-3072, e=3; ~0.2 s to generate).
        self.intel_key = (
            intel_key if intel_key is not None else generate_signing_key(self.rng.stream("intel"))
        )
        self.pce_build: EnclaveBuild = build_pce(self.intel_key, isvsvn=pce_isvsvn)
        self.qe_build: EnclaveBuild = build_qe(self.intel_key, isvsvn=qe_isvsvn)
        self.pki = TestPki.generate(
            self.rng.stream("pki"),
            not_before=self.epoch - dt.timedelta(days=366),
            not_after=self.epoch + dt.timedelta(days=25 * 365),
        )
        d = self.tcb
        self.tcb_model = TcbModel(
            fmspc=d.fmspc,
            pce_id=d.pce_id,
            levels=d.levels,
            tcb_evaluation_data_number=d.tcb_evaluation_data_number,
        )
        self.qe_identity = QeIdentityModel(
            mrsigner=self.qe_build.mrsigner,
            levels=list(d.qe_levels),
            tcb_evaluation_data_number=d.tcb_evaluation_data_number,
            isvprodid=self.qe_build.isvprodid,
        )
        self.pcs = Pcs(self.pki, self.qe_identity)
        self.pcs.add_tcb_model(self.tcb_model)
        self.broker_secret = self.rng.stream("broker").randbytes(32)
        self.platforms: list[Platform] = []
        #: [MODEL] Intel's fuse database: PPID -> the part's fused secret.
        self._fuses: dict[bytes, bytes] = {}
        for recovery in d.recoveries:
            self.publish_recovery(recovery, at_ns=0)

    # ------------------------------------------------------------------ time and trust

    def datetime_at(self, ns: int) -> dt.datetime:
        """The date at simulated time ``ns`` (nanoseconds after the epoch, microsecond precision)."""
        if not isinstance(ns, int) or isinstance(ns, bool) or ns < 0:
            raise InvalidArgument(f"simulated time must be a non-negative int (ns), got {ns!r}")
        return self.epoch + dt.timedelta(microseconds=ns // 1000)

    @property
    def root_der(self) -> bytes:
        """The trust anchor (Intel SGX Root CA) as DER."""
        return self.pki.root_der

    @property
    def root_pem(self) -> bytes:
        return self.pki.root_cert.public_bytes(serialization.Encoding.PEM)

    # ------------------------------------------------------------------ Intel's offline derivation

    def provision_key(self, fused_secret: bytes, cpusvn: bytes, pcesvn: int) -> bytes:
        """The PROVISION key the PCE gets from EGETKEY at (``cpusvn``, ``pcesvn``) on that part.

        Models: [MODEL] Intel's offline derivation from its fuse records: SDM EGETKEY
        KEYNAME=PROVISION dependencies for the PCE's KEYREQUEST (attribute mask = all but
        MODE64BIT, XFRM mask 0, MISC mask all ones; pce_cert.cpp ``get_provision_key``):
        ISVPRODID, ISVSVN = ``pcesvn``, ATTRIBUTES masked (INIT/DEBUG always bound), the mask,
        MRSIGNER, CPUSVN, PADDING (the PKCS#1 v1.5 SHA-256 padding of a valid SIGSTRUCT),
        MISCSELECT masked and the inverted MISC mask.
        """
        if not isinstance(cpusvn, bytes) or len(cpusvn) != CPUSVN_SIZE:
            raise InvalidArgument(f"cpusvn must be {CPUSVN_SIZE} bytes, got {cpusvn!r}")
        pce = self.pce_build
        required = int(Attributes.INIT | Attributes.DEBUG)
        attributes = (PCE_PROVISION_KEY_ATTRIBUTEMASK | required) & pce.secs_attributes
        xfrm = PCE_PROVISION_KEY_XFRMMASK & pce.image.xfrm
        deps = KeyDependencies(
            keyname=int(KeyName.PROVISION),
            isvprodid=pce.isvprodid,
            isvsvn=pcesvn,
            attributes=struct.pack("<QQ", attributes & _U64, xfrm & _U64),
            attributemask=struct.pack("<QQ", PCE_PROVISION_KEY_ATTRIBUTEMASK, PCE_PROVISION_KEY_XFRMMASK),
            mrsigner=pce.mrsigner,
            cpusvn=cpusvn,
            padding=PKCS1_SHA256_PADDING,
            miscselect=PCE_PROVISION_KEY_MISCMASK & pce.image.miscselect,
            miscmask=~PCE_PROVISION_KEY_MISCMASK & 0xFFFFFFFF,
        )
        return derive_key(fused_secret, deps)

    def intel_ppid(self, machine: Machine) -> bytes:
        """The PPID Intel computes for ``machine`` (PROVISION key at CPUSVN 0 / PCESVN 0).

        Models: [MODEL] Intel's offline derivation of pce_cert.cpp ``get_ppid``.
        """
        return ppid_from_provision_key(self.provision_key(_fuses(machine), bytes(CPUSVN_SIZE), 0))

    # ------------------------------------------------------------------ registration and TCB events

    def register(self, machine: Machine, *, ca: CaKind | str = CaKind.PLATFORM) -> RegisteredPlatform:
        """Register ``machine`` with the PCS and issue its PCK certificates (idempotent per PPID).

        Models: platform registration + Intel's PCK certificate issuance (one per TCB level of the
        FMSPC's TCB Info the PCE can sign at). Outcome: the PCS record.
        """
        ppid = self.intel_ppid(machine)
        self._fuses[ppid] = _fuses(machine)
        try:
            reg = self.pcs.platform(ppid)
        except InvalidArgument:
            reg = self.pcs.register_platform(ppid=ppid, fmspc=self.tcb.fmspc, pce_id=self.tcb.pce_id, ca=ca)
        self._issue_reachable(reg)
        return reg

    def _issue_reachable(self, reg: RegisteredPlatform) -> None:
        for level in self.tcb_model.levels:
            if level.pcesvn <= self.pce_build.isvsvn:
                self._issue(reg, bytes(level.components), level.pcesvn)

    def _issue(self, reg: RegisteredPlatform, cpusvn: bytes, pcesvn: int) -> PckCertificate:
        for cert in reg.certs:
            if cert.extension.cpusvn == cpusvn and cert.extension.pcesvn == pcesvn:
                return cert
        key = pck_private_key(self.provision_key(self._fuses[reg.ppid], cpusvn, pcesvn))
        ext = self.pki.default_extension(
            ppid=reg.ppid, cpusvn=cpusvn, pcesvn=pcesvn, pce_id=reg.pce_id, fmspc=reg.fmspc, ca=reg.ca
        )
        cert = self.pki.issue_pck(ext, ca=reg.ca, key=key)
        reg.certs.append(cert)
        return cert

    def publish_recovery(self, recovery: TcbRecovery, *, at_ns: int) -> TcbLevel:
        """Publish a TCB Recovery at simulated time ``at_ns`` and issue the new level's PCK certs.

        Models: Intel TCB-R: TcbModel.publish_recovery (new UpToDate level, dominated levels
        OutOfDate with the advisories, tcbEvaluationDataNumber + 1, also for the QE Identity).
        Outcome: the new level.
        """
        if not isinstance(recovery, TcbRecovery):
            raise InvalidArgument(f"recovery must be a TcbRecovery, got {type(recovery).__name__}")
        date = recovery.date if recovery.date is not None else self.datetime_at(at_ns)
        level = self.tcb_model.publish_recovery(
            components=recovery.components,
            pcesvn=recovery.pcesvn,
            date=date,
            advisory_ids=recovery.advisory_ids,
        )
        self.qe_identity.tcb_evaluation_data_number = self.tcb_model.tcb_evaluation_data_number
        for ppid in self._fuses:
            self._issue_reachable(self.pcs.platform(ppid))
        return level

    def current_pck(self, platform: Platform) -> PckCertificate | None:
        """The PCK certificate ``platform`` quotes with now, without starting anything.

        The certificate of its certification if the quoting service has one, else the one the
        PCS selects for the machine's raw TCB now (CPUSVN, the PCE's ISVSVN).
        """
        if platform._cert is not None:
            return platform._cert.pck
        return self.pcs.select_pck_cert(platform.ppid, platform.machine.cpusvn, self.pce_build.isvsvn)

    def publish_recovery_with_impact(
        self, recovery: TcbRecovery, *, at_ns: int, grace: dt.timedelta = dt.timedelta(0)
    ) -> tuple[TcbLevel, FleetImpact]:
        """:meth:`publish_recovery`, and which of this world's platforms it demotes and when.

        Models: what ``sgxsim tcb-impact`` tells an operator (:func:`sgxsim.attest.impact.tcb_impact`):
        each platform's PCK TCB under the TCB Info before and after the recovery.
        """
        now = self.datetime_at(at_ns)
        before = self.pcs.tcb_info(self.tcb.fmspc, now).body
        evidence = []
        for i, platform in enumerate(self.platforms):
            pck = self.current_pck(platform)
            if pck is not None:
                evidence.append(Evidence(f"platform {i} ({platform.name})", pck.extension))
        level = self.publish_recovery(recovery, at_ns=at_ns)
        after = self.pcs.tcb_info(self.tcb.fmspc, now).body
        return level, tcb_impact(evidence, [before], [after], grace=grace)

    def add_platform(
        self,
        machine: Machine,
        kernel: Kernel,
        *,
        ca: CaKind | str = CaKind.PLATFORM,
        name: str = "aesm_service",
    ) -> Platform:
        """Register ``machine`` and bind it (with its running ``kernel``) to this world."""
        if (
            not isinstance(machine, Machine)
            or not isinstance(kernel, Kernel)
            or kernel.machine is not machine
        ):
            raise InvalidArgument("add_platform needs a Machine and a Kernel booted on it")
        reg = self.register(machine, ca=ca)
        platform = Platform(self, machine, kernel, reg, name=name)
        self.platforms.append(platform)
        return platform

    # ------------------------------------------------------------------ relying party

    def collateral(self, ca: CaKind | str, at_ns: int) -> Collateral:
        """PCS collateral (TCB Info, QE Identity, CRLs) issued at simulated time ``at_ns``.

        Models: PCS v4 ``/tcb``, ``/qe/identity``, ``/pckcrl`` + the root CA CRL (dcap-qvl's
        ``get_collateral``).
        """
        return self.pcs.collateral(self.tcb.fmspc, ca, self.datetime_at(at_ns))

    def verify(self, quote: bytes, collateral: Collateral, at_ns: int) -> VerifiedQuote:
        """:func:`~sgxsim.attest.verify_quote` with this world's root at ``at_ns``; VerificationError."""
        return verify_quote(quote, collateral, self.root_der, self.datetime_at(at_ns))

    def broker(self, policy: BrokerPolicy) -> KeyBroker:
        """A key broker releasing this world's secret under ``policy``."""
        return KeyBroker(policy, self.broker_secret, self.root_der)


def _fuses(machine: Machine) -> bytes:
    if not isinstance(machine, Machine):
        raise InvalidArgument(f"machine must be a Machine, got {type(machine).__name__}")
    return machine.fused_secret


class Platform:
    """One machine + kernel bound to an :class:`AttestationWorld`: its quoting service and attestation."""

    def __init__(
        self,
        world: AttestationWorld,
        machine: Machine,
        kernel: Kernel,
        registered: RegisteredPlatform,
        *,
        name: str,
    ) -> None:
        self.world = world
        self.machine = machine
        self.kernel = kernel
        self.registered = registered
        self.name = name
        self.auth_data = DEFAULT_QE_AUTH_DATA
        #: How many times the PCE and QE were (re)loaded.
        self.starts = 0
        self._proc: Process | None = None
        self._pce: ProvisioningCertificationEnclave | None = None
        self._qe: QuotingEnclave | None = None
        self._cert: _Certification | None = None

    @property
    def ppid(self) -> bytes:
        return self.registered.ppid

    @property
    def ca(self) -> CaKind:
        return self.registered.ca

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """The PCE and QE are loaded in a live process and the driver has not torn them down.

        False after an SVN update zapped their EPC (``SGX_ENCL_DEAD``): the next use restarts
        the service. A loss the driver does not record (an unmapped TCS, the as-posted RFC
        kernel) shows at the next quote, which reloads once.
        """
        return (
            self._pce is not None
            and self._qe is not None
            and self._cert is not None
            and self._pce.alive
            and self._qe.alive
            and not _torn_down(self._pce)
            and not _torn_down(self._qe)
        )

    @property
    def pce(self) -> ProvisioningCertificationEnclave | None:
        """The loaded PCE's handle (None when the service is stopped)."""
        return self._pce

    @property
    def qe(self) -> QuotingEnclave | None:
        """The loaded QE's handle (None when the service is stopped)."""
        return self._qe

    @property
    def process(self) -> Process | None:
        """The service's process (None when stopped)."""
        return self._proc

    def start(self) -> None:
        """Load the PCE and QE (if not running) and certify the QE's attestation key.

        When the old enclaves were torn down (or their process is gone) the service is stopped
        first (handles closed, process ended) and started in a new process: the QE reports the
        raw TCB it now runs at, the PCK certificate is selected again for it, and the PCE
        certifies the new attestation key at that certificate's TCB.
        Models: aesmd / the DCAP quote library's initialization (``sgx_qe_get_target_info``:
        load enclaves, ``gen_att_key``, ``get_pc_info``, PCK cert selection on the raw TCB,
        ``certify_enclave``; SGX_ERROR_ENCLAVE_LOST: unload and reload). Outcomes: None;
        :class:`~sgxsim.sdk.quoting.AeCallError` (SGX_QL_NO_PLATFORM_CERT_DATA when no PCK
        certificate fits the raw TCB; the PCE's/QE's errors); OSError from loading (e.g. ENOMEM,
        EBUSY while the EPC is locked for an update, EAGAIN when the first open's EUPDATESVN ran
        out of entropy).
        """
        if self.running:
            return
        self.stop()
        proc = Process(self.kernel, self.name)
        try:
            pce = load_pce(proc, self.world.pce_build)
            qe = load_qe(proc, self.world.qe_build)
            cert = self._certify(pce, qe)
        except BaseException:
            if not proc.exited:
                proc.exit()
            raise
        self._proc, self._pce, self._qe, self._cert = proc, pce, qe, cert
        self.starts += 1

    def _certify(self, pce: ProvisioningCertificationEnclave, qe: QuotingEnclave) -> _Certification:
        init = qe.gen_att_key(pce.target_info(), self.auth_data)
        info = pce.get_pc_info(init.report)
        raw_cpusvn = init.report[:CPUSVN_SIZE]
        pck = self.world.pcs.select_pck_cert(info.ppid, raw_cpusvn, info.pce_isvsvn, info.pce_id)
        if pck is None:
            raise AeCallError(
                "platform.certify",
                Quote3Error.SGX_QL_NO_PLATFORM_CERT_DATA,
                detail=f"no PCK certificate for raw TCB {raw_cpusvn.hex()}/{info.pce_isvsvn}",
            )
        sig = pce.certify_enclave(init.report, pck.extension.cpusvn, pck.extension.pcesvn)
        return _Certification(init, info, raw_cpusvn, pck, sig, target_info_of(init.report))

    def stop(self) -> None:
        """Unload the PCE and QE and end their process (nothing to do for what is already gone).

        Models: aesmd unloading its enclaves / the service exiting.
        """
        for handle in (self._qe, self._pce):
            if handle is not None:
                handle.close()
        if self._proc is not None and not self._proc.exited:
            self._proc.exit()
        self._proc = self._pce = self._qe = None
        self._cert = None

    def _certification(self) -> _Certification:
        self.start()
        if self._cert is None:  # pragma: no cover - start() sets it or raises
            raise AeCallError("platform", Quote3Error.SGX_QL_ATT_KEY_NOT_INITIALIZED)
        return self._cert

    # ------------------------------------------------------------------ queries

    def qe_target_info(self) -> Targetinfo:
        """The QE's TARGETINFO (``sgx_qe_get_target_info``), starting the service if needed."""
        return self._certification().qe_target

    def pce_info(self) -> PceInfo:
        """PPID, PCESVN and PCE-ID as the PCE reported them."""
        return self._certification().pce_info

    def raw_tcb(self) -> tuple[bytes, int]:
        """The raw TCB the PCK certificate was selected for: (CPUSVN of the QE report, PCESVN)."""
        cert = self._certification()
        return cert.raw_cpusvn, cert.pce_info.pce_isvsvn

    def pck_certificate(self) -> PckCertificate:
        """The PCK certificate selected for the raw TCB (the one in this platform's quotes)."""
        return self._certification().pck

    # ------------------------------------------------------------------ quoting and attestation

    def quote(self, app_report: bytes, *, version: int = 3) -> bytes:
        """A quote for a REPORT targeted at the QE; reloads the quoting enclaves once if they were lost.

        The service is restarted first when its enclaves were torn down (see :meth:`start`); a
        REPORT made before an SVN update then fails the new QE's MAC check (the REPORT key
        changed with the CPUSVN).
        Models: ``sgx_qe_get_quote`` (the QE signs; certification data = QE report, PCE signature,
        auth data, PCK chain leaf || PCK CA || root). Outcomes: the quote; AeCallError
        (SGX_QL_INVALID_REPORT for a REPORT whose MAC the QE rejects, ...); EnclaveLost if the
        enclaves are lost twice in a row; the errors of :meth:`start`.
        """
        for attempt in (0, 1):
            cert = self._certification()
            qe = self._qe
            if qe is None:  # pragma: no cover - _certification() loaded it
                raise EnclaveLost("platform.quote", "no QE")
            data = certification_data(
                cert.init.report_body,
                cert.qe_report_sig,
                cert.init.auth_data,
                self.world.pki.pck_chain_pem(cert.pck),
            )
            try:
                return qe.get_quote(app_report, data, cert.pck.extension.pcesvn, version=version)
            except EnclaveLost:
                if attempt:
                    raise
                self.stop()
        raise ModelInvariantError("quote retry loop fell through")  # pragma: no cover

    def attest(
        self,
        app: Attestable,
        *,
        at_ns: int,
        report_data: bytes = b"",
        version: int = 3,
        policy: BrokerPolicy | None = None,
    ) -> AttestationResult:
        """Attest ``app`` at simulated time ``at_ns``: REPORT -> quote -> collateral -> verdict -> broker.

        The broker's policy defaults to the application's own MRENCLAVE with the broker's default
        TCB statuses (UpToDate, SWHardeningNeeded). The quoting service is (re)started first if
        needed (see :meth:`start`). Outcomes: :class:`AttestationResult` whose ``verification``
        is the :class:`~sgxsim.attest.VerifiedQuote` or the
        :class:`~sgxsim.errors.VerificationError`; :class:`AppEnclaveLost` when ``app`` cannot
        make its REPORT (it lost its EPC or its process); quoting failures raise as in
        :meth:`quote` and :meth:`start`.
        """
        target = self.qe_target_info()
        try:
            report = app.report(target, report_data)
        except EnclaveLost as err:
            raise AppEnclaveLost.from_lost(err) from err
        quote = self.quote(report, version=version)
        now = self.world.datetime_at(at_ns)
        collateral = self.world.collateral(self.ca, at_ns)
        verification: VerifiedQuote | VerificationError
        try:
            verification = verify_quote(quote, collateral, self.world.root_der, now)
        except VerificationError as exc:
            verification = exc
        if policy is None:
            body = ReportBody.unpack(report[:384])
            policy = BrokerPolicy(rules=(EnclaveRule(mrenclave=body.mr_enclave),))
        decision = self.world.broker(policy).request(quote, collateral, now)
        return AttestationResult(quote, collateral, verification, decision)


@dataclass(frozen=True)
class FleetQuote:
    """One platform of :func:`quote_fleet`: its late-microcode SVN and its attestation."""

    name: str
    late_microcode_svn: int
    result: AttestationResult


#: Revision of the early microcode patch :func:`quote_fleet` boots its machines with.
FLEET_MICROCODE_REVISION = 0xD0003A5


def quote_fleet(
    world: AttestationWorld,
    late_microcode_svns: Iterable[int],
    *,
    seed: int,
    version: int = 3,
    at_ns: int = 0,
) -> list[FleetQuote]:
    """Boot one machine per SVN in ``world`` (one root CA, one PCS) and quote an application enclave on each.

    Machine ``i`` boots the early microcode patch with the "SGX Late Microcode Update" component
    at ``late_microcode_svns[i]`` (every other component 2, as :class:`MachineConfig`'s default)
    and draws its fuses from ``Rng(seed).child("machine")`` (``machine-i`` for i > 0). The
    application enclave is one build signed by one ISV key. Outcome: the quotes with their
    collateral, verdict and broker decision at simulated time ``at_ns``.
    """
    svns = list(late_microcode_svns)
    if not svns or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 255 for v in svns):
        raise InvalidArgument(f"late microcode SVNs must be a non-empty list of 1..255, got {svns!r}")
    rng = Rng(seed)
    isv_key = generate_signing_key(rng.stream("isv"))
    app_build = build_app(isv_key)
    out: list[FleetQuote] = []
    for i, svn in enumerate(svns):
        patch = MicrocodePatch.with_svns(FLEET_MICROCODE_REVISION, base=2, late_microcode=svn, name="early")
        machine = Machine(
            MachineConfig(early_microcode=patch), rng.child("machine" if i == 0 else f"machine-{i}")
        )
        kernel = Kernel(machine)
        platform = world.add_platform(machine, kernel, name=f"aesm_service-{i}")
        app = load_app(Process(kernel, "app"), app_build, rng.stream("keyid" if i == 0 else f"keyid-{i}"))
        nonce = hashlib.sha256(f"sgxsim quote --seed {seed} platform {i}".encode()).digest()
        result = platform.attest(app, at_ns=at_ns, report_data=nonce, version=version)
        out.append(FleetQuote(f"platform-{i:02d}", svn, result))
    return out
