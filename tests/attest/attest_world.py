"""The attest tests' world (imported as ``attest_world``): PKI, TCB model, QE identity, PCS, quotes.

Fixed simulated dates (no wall clock). TCB levels (FMSPC 00906ed50000, PCE-ID 0000), highest first:

* ``uptodate``  (6,6,3,3,4,1,0,3,0..) pcesvn 13  UpToDate
* ``swhard``    (5,5,3,3,4,1,0,3,0..) pcesvn 13  SWHardeningNeeded  [INTEL-SA-00615]
* ``config``    (4,4,3,3,4,1,0,3,0..) pcesvn 13  ConfigurationNeeded [INTEL-SA-00219]
* ``outofdate`` (3,3,2,2,3,1,0,3,0..) pcesvn 11  OutOfDate [INTEL-SA-00828, INTEL-SA-00837]
* ``revoked``   (1,1,1,1,1,1,0,1,0..) pcesvn 5   Revoked   [INTEL-SA-00001]

The QE identity accepts ISVSVN 8 as UpToDate and 6 as OutOfDate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass

from sgxsim.attest import (
    Collateral,
    PckCertificate,
    Pcs,
    QeIdentityModel,
    QeTcbLevel,
    ReportBody,
    TcbLevel,
    TcbModel,
    TcbStatus,
    TestPki,
    build_quote_v3,
    build_quote_v4,
    derive_p256_key,
    ecdsa_raw_sign,
    public_key_raw,
    qe_report_data,
)

UTC = dt.UTC
PKI_NOT_BEFORE = dt.datetime(2024, 1, 1, tzinfo=UTC)
PKI_NOT_AFTER = dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)
NOW = dt.datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
FMSPC = bytes.fromhex("00906ed50000")
PCE_ID = bytes(2)
PPID = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
QE_MRSIGNER = hashlib.sha256(b"sgxsim test QE signer").digest()
ISV_MRENCLAVE = hashlib.sha256(b"sgxsim test enclave").digest()
ISV_MRSIGNER = hashlib.sha256(b"sgxsim test ISV signer").digest()
QE_AUTH_DATA = bytes(range(32))


def comps(*head: int) -> tuple[int, ...]:
    return tuple(head) + (0,) * (16 - len(head))


LEVELS: dict[str, TcbLevel] = {
    "uptodate": TcbLevel(
        comps(6, 6, 3, 3, 4, 1, 0, 3), 13, dt.datetime(2025, 5, 13, tzinfo=UTC), TcbStatus.UP_TO_DATE
    ),
    "swhard": TcbLevel(
        comps(5, 5, 3, 3, 4, 1, 0, 3),
        13,
        dt.datetime(2024, 11, 12, tzinfo=UTC),
        TcbStatus.SW_HARDENING_NEEDED,
        ("INTEL-SA-00615",),
    ),
    "config": TcbLevel(
        comps(4, 4, 3, 3, 4, 1, 0, 3),
        13,
        dt.datetime(2024, 3, 12, tzinfo=UTC),
        TcbStatus.CONFIGURATION_NEEDED,
        ("INTEL-SA-00219",),
    ),
    "outofdate": TcbLevel(
        comps(3, 3, 2, 2, 3, 1, 0, 3),
        11,
        dt.datetime(2023, 8, 9, tzinfo=UTC),
        TcbStatus.OUT_OF_DATE,
        ("INTEL-SA-00828", "INTEL-SA-00837"),
    ),
    "revoked": TcbLevel(
        comps(1, 1, 1, 1, 1, 1, 0, 1),
        5,
        dt.datetime(2019, 5, 15, tzinfo=UTC),
        TcbStatus.REVOKED,
        ("INTEL-SA-00001",),
    ),
}


def isv_body(cpusvn: bytes, **changes: object) -> ReportBody:
    """A non-debug ISV enclave report body."""
    fields: dict[str, object] = {
        "cpu_svn": cpusvn,
        "attributes_flags": 0x05,  # INIT | MODE64BIT
        "attributes_xfrm": 0x03,
        "mr_enclave": ISV_MRENCLAVE,
        "mr_signer": ISV_MRSIGNER,
        "isv_prod_id": 7,
        "isv_svn": 3,
        "report_data": b"nonce:0001".ljust(64, b"\0"),
    }
    fields.update(changes)
    return ReportBody(**fields)  # type: ignore[arg-type]


@dataclass
class World:
    """Everything a test needs; ``quote(...)`` plays the QE, ``collateral(...)`` the PCS."""

    rng: random.Random
    pki: TestPki
    model: TcbModel
    qe_model: QeIdentityModel
    pcs: Pcs

    @classmethod
    def build(cls, seed: int = 1, *, ca: str = "platform") -> World:
        rng = random.Random(seed)
        pki = TestPki.generate(rng, not_before=PKI_NOT_BEFORE, not_after=PKI_NOT_AFTER)
        model = TcbModel(fmspc=FMSPC, pce_id=PCE_ID, levels=LEVELS.values(), tcb_evaluation_data_number=17)
        qe_model = QeIdentityModel(
            mrsigner=QE_MRSIGNER,
            levels=[
                QeTcbLevel(8, dt.datetime(2024, 3, 13, tzinfo=UTC), TcbStatus.UP_TO_DATE),
                QeTcbLevel(
                    6, dt.datetime(2021, 11, 10, tzinfo=UTC), TcbStatus.OUT_OF_DATE, ("INTEL-SA-00615",)
                ),
            ],
            tcb_evaluation_data_number=17,
        )
        pcs = Pcs(pki, qe_model)
        pcs.add_tcb_model(model)
        pcs.register_platform(
            ppid=PPID,
            fmspc=FMSPC,
            pce_id=PCE_ID,
            tcbs=[(bytes(lv.components), lv.pcesvn) for lv in LEVELS.values()],
            ca=ca,
        )
        return cls(rng, pki, model, qe_model, pcs)

    def pck(self, level: str) -> PckCertificate:
        lv = LEVELS[level]
        return self.pcs.add_pck_cert(PPID, bytes(lv.components), lv.pcesvn)

    def qe_report(
        self,
        pck: PckCertificate,
        attest_pub_raw: bytes,
        *,
        auth: bytes = QE_AUTH_DATA,
        isv_svn: int = 8,
        flags: int = 0x15,  # INIT | MODE64BIT | PROVISIONKEY, as Intel's QE3
        mrsigner: bytes = QE_MRSIGNER,
    ) -> tuple[bytes, bytes]:
        body = ReportBody(
            cpu_svn=pck.extension.cpusvn,
            attributes_flags=flags,
            attributes_xfrm=0x03,
            mr_enclave=hashlib.sha256(b"QE3").digest(),
            mr_signer=mrsigner,
            isv_prod_id=1,
            isv_svn=isv_svn,
            report_data=qe_report_data(attest_pub_raw, auth),
        ).pack()
        return body, ecdsa_raw_sign(pck.key, body)

    def quote(
        self,
        level: str = "uptodate",
        *,
        version: int = 3,
        pck: PckCertificate | None = None,
        body: ReportBody | None = None,
        qe_isv_svn: int = 8,
        qe_flags: int = 0x15,
        qe_mrsigner: bytes = QE_MRSIGNER,
        chain: bytes | None = None,
        auth: bytes = QE_AUTH_DATA,
    ) -> bytes:
        pck = pck if pck is not None else self.pck(level)
        attest = derive_p256_key(random.Random(1000 + len(level)))
        qe_body, qe_sig = self.qe_report(
            pck, public_key_raw(attest), auth=auth, isv_svn=qe_isv_svn, flags=qe_flags, mrsigner=qe_mrsigner
        )
        body = body if body is not None else isv_body(pck.extension.cpusvn)
        build = build_quote_v3 if version == 3 else build_quote_v4
        return build(
            qe_svn=qe_isv_svn,
            pce_svn=pck.extension.pcesvn,
            report_body=body.pack(),
            attest_key=attest,
            qe_report_body=qe_body,
            qe_report_sig=qe_sig,
            qe_auth_data=auth,
            pck_chain_pem=chain if chain is not None else self.pki.pck_chain_pem(pck),
        )

    def collateral(self, now: dt.datetime = NOW, ca: str = "platform") -> Collateral:
        return self.pcs.collateral(FMSPC, ca, now)
