"""A Provisioning Certification Service: PCK certificates, TCB Info, QE Identity and CRLs.

In-process API (:class:`Pcs`) plus :class:`PcsHttpServer`, a loopback HTTP server with Intel
PCS v4 paths and headers (``/sgx/certification/v4/pckcert``, ``/tcb``, ``/qe/identity``,
``/pckcrl``, and PCCS's ``/rootcacrl``), and :class:`PcsClient` to fetch collateral from it.

PCK certificate selection follows Intel's PCKCertSelection library
(``intel/SGXDataCenterAttestationPrimitives`` tools/PCKCertSelection, ``PCKSorter``): the
platform's certificates are sorted into one bucket per TCB Info level (first level the cert's
TCB is >= to, plus a last bucket), each bucket highest-first; the answer is the first
certificate, in bucket order, whose TCB the raw (CPUSVN decomposed per tcbType 0, PCESVN) is
>= to in every component and PCESVN.

Differs: ``encrypted_ppid`` is the PPID in hex (no RSA-3072-OAEP encryption to Intel's key);
``/rootcacrl`` is PCCS's path (Intel serves the root CRL from certificates.trustedservices.intel.com);
response bodies are generated on request with ``issueDate`` = the injected clock's now.
"""

from __future__ import annotations

import datetime as dt
import http.server
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sgxsim.attest.collateral import (
    Collateral,
    QeIdentityModel,
    SignedDocument,
    TcbModel,
    sign_document,
    split_envelope,
)
from sgxsim.attest.pki import CaKind, PckCertificate, TestPki
from sgxsim.errors import InvalidArgument, SgxSimError

__all__ = [
    "PCS_V4_PREFIX",
    "Pcs",
    "PcsClient",
    "PcsHttpError",
    "PcsHttpServer",
    "PcsReply",
    "RegisteredPlatform",
    "select_pck_cert",
]

PCS_V4_PREFIX = "/sgx/certification/v4"
_LOWER, _GE, _UNDEFINED = "lower", "equal_or_greater", "undefined"


def _compare_tcb(left: Sequence[int], left_pcesvn: int, right: Sequence[int], right_pcesvn: int) -> str:
    """PCKSorter::compare_tcb_components: is ``left`` lower, >= or incomparable to ``right``."""
    left_lower = left_pcesvn < right_pcesvn
    right_lower = left_pcesvn > right_pcesvn
    for a, b in zip(left, right, strict=True):
        left_lower |= a < b
        right_lower |= a > b
    if left_lower and right_lower:
        return _UNDEFINED
    return _LOWER if left_lower else _GE


def select_pck_cert(
    raw_cpusvn: bytes,
    raw_pcesvn: int,
    tcb_model: TcbModel,
    certs: Sequence[PckCertificate],
) -> PckCertificate | None:
    """Pick the PCK certificate a platform with this raw TCB should use (Intel's PCKCertSelection).

    Models: PCKSorter::sort_to_buckets + find_best_pck (tcbType 0: CPUSVN bytes are components).
    Outcome: the certificate, or ``None`` when the raw TCB is below every certificate's TCB
    (PCK_CERT_SELECT_PCK_NOT_FOUND).
    """
    if not isinstance(raw_cpusvn, bytes) or len(raw_cpusvn) != 16:
        raise InvalidArgument(f"raw_cpusvn must be 16 bytes, got {raw_cpusvn!r}")
    if not isinstance(raw_pcesvn, int) or not 0 <= raw_pcesvn <= 0xFFFF:
        raise InvalidArgument(f"raw_pcesvn must be a u16, got {raw_pcesvn!r}")
    levels = tcb_model.levels
    buckets: list[list[PckCertificate]] = [[] for _ in range(len(levels) + 1)]
    for cert in certs:
        comps, pcesvn = cert.extension.tcb_components, cert.extension.pcesvn
        index = next(
            (
                i
                for i, lv in enumerate(levels)
                if _compare_tcb(comps, pcesvn, lv.components, lv.pcesvn) == _GE
            ),
            len(levels),
        )
        bucket = buckets[index]
        pos = next(
            (
                j
                for j, other in enumerate(bucket)
                if _compare_tcb(comps, pcesvn, other.extension.tcb_components, other.extension.pcesvn) == _GE
            ),
            len(bucket),
        )
        bucket.insert(pos, cert)
    raw = tuple(raw_cpusvn)  # tcbType 0 decomposition
    for bucket in buckets:
        for cert in bucket:
            if _compare_tcb(raw, raw_pcesvn, cert.extension.tcb_components, cert.extension.pcesvn) == _GE:
                return cert
    return None


@dataclass
class RegisteredPlatform:
    """A platform the PCS knows: its identity and its PCK certificates (one per TCB)."""

    ppid: bytes
    fmspc: bytes
    pce_id: bytes
    ca: CaKind
    certs: list[PckCertificate] = field(default_factory=list)


class Pcs:
    """The service state: a PKI, TCB models per FMSPC, the QE identity and registered platforms."""

    def __init__(
        self,
        pki: TestPki,
        qe_identity: QeIdentityModel,
        *,
        tcb_validity: dt.timedelta = dt.timedelta(days=30),
        crl_validity: dt.timedelta = dt.timedelta(days=30),
    ) -> None:
        if not isinstance(pki, TestPki):
            raise InvalidArgument(f"pki must be a TestPki, got {type(pki).__name__}")
        if not isinstance(qe_identity, QeIdentityModel):
            raise InvalidArgument(f"qe_identity must be a QeIdentityModel, got {type(qe_identity).__name__}")
        self.pki = pki
        self.qe_identity_model = qe_identity
        self.tcb_validity = tcb_validity
        self.crl_validity = crl_validity
        self._models: dict[bytes, TcbModel] = {}
        self._early_models: dict[bytes, TcbModel] = {}
        self._platforms: dict[bytes, RegisteredPlatform] = {}

    # ------------------------------------------------------------ registration

    def add_tcb_model(self, model: TcbModel, *, update: str = "standard") -> None:
        """Publish TCB levels for ``model.fmspc`` (replacing a previous model).

        ``update="early"`` publishes the model PCS serves for ``/tcb?update=early`` (Intel's
        early TCB evaluation after a TCB Recovery, before it becomes the standard one).
        """
        if not isinstance(model, TcbModel):
            raise InvalidArgument(f"model must be a TcbModel, got {type(model).__name__}")
        if update not in ("standard", "early"):
            raise InvalidArgument(f"update must be 'standard' or 'early', got {update!r}")
        (self._early_models if update == "early" else self._models)[model.fmspc] = model

    def tcb_model(self, fmspc: bytes) -> TcbModel:
        if fmspc not in self._models:
            raise InvalidArgument(f"unknown FMSPC {fmspc!r}")
        return self._models[fmspc]

    def register_platform(
        self,
        *,
        ppid: bytes,
        fmspc: bytes,
        pce_id: bytes = bytes(2),
        tcbs: Iterable[tuple[bytes, int]] = (),
        ca: CaKind | str = CaKind.PLATFORM,
    ) -> RegisteredPlatform:
        """Register a platform and issue a PCK certificate for each ``(cpusvn, pcesvn)`` in ``tcbs``."""
        if not isinstance(ppid, bytes) or len(ppid) != 16:
            raise InvalidArgument(f"ppid must be 16 bytes, got {ppid!r}")
        model = self.tcb_model(fmspc)
        if pce_id != model.pce_id:
            raise InvalidArgument(f"PCE-ID {pce_id!r} differs from the TCB info's {model.pce_id!r}")
        platform = RegisteredPlatform(ppid, fmspc, pce_id, CaKind(ca))
        self._platforms[ppid] = platform
        for cpusvn, pcesvn in tcbs:
            self.add_pck_cert(ppid, cpusvn, pcesvn)
        return platform

    def add_pck_cert(self, ppid: bytes, cpusvn: bytes, pcesvn: int) -> PckCertificate:
        """Issue (or return the existing) PCK certificate of a platform for one TCB."""
        platform = self.platform(ppid)
        for cert in platform.certs:
            if cert.extension.cpusvn == cpusvn and cert.extension.pcesvn == pcesvn:
                return cert
        ext = self.pki.default_extension(
            ppid=ppid,
            cpusvn=cpusvn,
            pcesvn=pcesvn,
            pce_id=platform.pce_id,
            fmspc=platform.fmspc,
            ca=platform.ca,
        )
        cert = self.pki.issue_pck(ext, ca=platform.ca)
        platform.certs.append(cert)
        return cert

    def platform(self, ppid: bytes) -> RegisteredPlatform:
        if ppid not in self._platforms:
            raise InvalidArgument(f"unknown PPID {ppid!r}")
        return self._platforms[ppid]

    # ------------------------------------------------------------ queries

    def select_pck_cert(
        self, ppid: bytes, raw_cpusvn: bytes, raw_pcesvn: int, pce_id: bytes | None = None
    ) -> PckCertificate | None:
        """The certificate PCS returns for this platform's raw TCB (``None``: 404 No cert found)."""
        platform = self.platform(ppid)
        if pce_id is not None and pce_id != platform.pce_id:
            return None
        return select_pck_cert(raw_cpusvn, raw_pcesvn, self.tcb_model(platform.fmspc), platform.certs)

    def tcb_info(self, fmspc: bytes, now: dt.datetime, *, update: str = "standard") -> SignedDocument:
        """Signed TCB Info for ``fmspc`` issued at ``now``, valid for ``tcb_validity``.

        ``update="early"`` serves the early model if one was published, else the standard one.
        """
        model = self._early_models.get(fmspc) if update == "early" else None
        body = (model or self.tcb_model(fmspc)).tcb_info(now, now + self.tcb_validity)
        return sign_document("tcbInfo", body, self.pki.tcb_signing_key)

    def qe_identity(self, now: dt.datetime) -> SignedDocument:
        """Signed QE Identity issued at ``now``, valid for ``tcb_validity``."""
        body = self.qe_identity_model.identity_json(now, now + self.tcb_validity)
        return sign_document("enclaveIdentity", body, self.pki.tcb_signing_key)

    def crl(self, ca: CaKind | str, now: dt.datetime) -> bytes:
        """DER CRL of the ``platform``/``processor`` PCK CA, or of the root for ``"root"``."""
        if ca == "root":
            return self.pki.root_ca_crl(now, now + self.crl_validity)
        return self.pki.pck_crl(CaKind(ca), now, now + self.crl_validity)

    def collateral(self, fmspc: bytes, ca: CaKind | str, now: dt.datetime) -> Collateral:
        """The QuoteCollateralV3 bundle a verifier needs for a quote from ``fmspc`` / ``ca``."""
        tcb = self.tcb_info(fmspc, now)
        qe = self.qe_identity(now)
        signing_chain = self.pki.tcb_signing_chain_pem()
        return Collateral(
            pck_crl_issuer_chain=self.pki.pck_ca_chain_pem(ca),
            root_ca_crl=self.crl("root", now),
            pck_crl=self.crl(ca, now),
            tcb_info_issuer_chain=signing_chain,
            tcb_info=tcb.body,
            tcb_info_signature=tcb.signature,
            qe_identity_issuer_chain=signing_chain,
            qe_identity=qe.body,
            qe_identity_signature=qe.signature,
        )


# ---------------------------------------------------------------- HTTP


def _quote_header(pem: str) -> str:
    return urllib.parse.quote(pem, safe="")


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "text/plain"


def _route(pcs: Pcs, now: dt.datetime, path: str, query: dict[str, list[str]]) -> _Response:
    """One PCS v4 request -> response (status, body, headers). Pure function of the PCS state."""

    def arg(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values and len(values) == 1 else None

    def hexarg(name: str, size: int) -> bytes | None:
        text = arg(name)
        if text is None or len(text) != 2 * size:
            return None
        try:
            return bytes.fromhex(text)
        except ValueError:
            return None

    if not path.startswith(PCS_V4_PREFIX):
        return _Response(404, b"Not Found")
    endpoint = path[len(PCS_V4_PREFIX) :]
    if endpoint == "/pckcert":
        ppid = hexarg("encrypted_ppid", 16)
        cpusvn = hexarg("cpusvn", 16)
        pcesvn = hexarg("pcesvn", 2)
        pceid = hexarg("pceid", 2)
        if ppid is None or cpusvn is None or pcesvn is None or pceid is None:
            return _Response(400, b"Invalid request parameters")
        try:
            cert = pcs.select_pck_cert(ppid, cpusvn, int.from_bytes(pcesvn, "little"), pceid[::-1])
        except InvalidArgument:
            cert = None
        if cert is None:
            return _Response(404, b"No cert found")
        ext = cert.extension
        return _Response(
            200,
            cert.pem,
            (
                ("SGX-PCK-Certificate-Issuer-Chain", _quote_header(pcs.pki.pck_ca_chain_pem(cert.ca))),
                ("SGX-TCBm", (ext.cpusvn + ext.pcesvn.to_bytes(2, "little")).hex().upper()),
                ("SGX-FMSPC", ext.fmspc.hex().upper()),
                ("SGX-PCK-Certificate-CA-Type", cert.ca.value),
            ),
            "application/x-pem-file",
        )
    if endpoint == "/tcb":
        fmspc = hexarg("fmspc", 6)
        if fmspc is None:
            return _Response(400, b"Invalid request parameters")
        update = arg("update") or "standard"
        if update not in ("standard", "early"):
            return _Response(400, b"Invalid request parameters")
        try:
            doc = pcs.tcb_info(fmspc, now, update=update)
        except InvalidArgument:
            return _Response(404, b"No TCB info found")
        return _Response(
            200,
            doc.envelope().encode(),
            (("TCB-Info-Issuer-Chain", _quote_header(pcs.pki.tcb_signing_chain_pem())),),
            "application/json",
        )
    if endpoint == "/qe/identity":
        doc = pcs.qe_identity(now)
        return _Response(
            200,
            doc.envelope().encode(),
            (("SGX-Enclave-Identity-Issuer-Chain", _quote_header(pcs.pki.tcb_signing_chain_pem())),),
            "application/json",
        )
    if endpoint == "/pckcrl":
        ca = arg("ca")
        encoding = arg("encoding") or "pem"
        if ca not in ("platform", "processor") or encoding not in ("pem", "der"):
            return _Response(400, b"Invalid request parameters")
        der = pcs.crl(ca, now)
        body = der
        if encoding == "pem":
            crl = x509.load_der_x509_crl(der)
            body = crl.public_bytes(serialization.Encoding.PEM)
        return _Response(
            200,
            body,
            (("SGX-PCK-CRL-Issuer-Chain", _quote_header(pcs.pki.pck_ca_chain_pem(ca))),),
            "application/pkix-crl" if encoding == "der" else "application/x-pem-file",
        )
    if endpoint == "/rootcacrl":
        return _Response(200, pcs.crl("root", now), (), "application/pkix-crl")
    return _Response(404, b"Not Found")


class PcsHttpServer:
    """A PCS v4 HTTP endpoint on 127.0.0.1 (ephemeral port), served from a background thread.

    ``clock`` gives the time stamped into issued documents (a simulated clock, never the wall
    clock). Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, pcs: Pcs, clock: Callable[[], dt.datetime]) -> None:
        if not isinstance(pcs, Pcs):
            raise InvalidArgument(f"pcs must be a Pcs, got {type(pcs).__name__}")
        self.pcs = pcs
        self.clock = clock
        self.requests = 0
        self._lock = threading.Lock()
        self._server: http.server.HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
                with owner._lock:
                    owner.requests += 1
                    request_id = f"{owner.requests:032x}"
                    try:
                        response = _route(owner.pcs, owner.clock(), url.path, query)
                    except SgxSimError as exc:  # e.g. a naive datetime from the injected clock
                        response = _Response(500, f"Internal error: {exc}".encode())
                self.send_response(response.status)
                self.send_header("Request-ID", request_id)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in response.headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise InvalidArgument("server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> PcsHttpServer:
        """Bind 127.0.0.1:0 and serve in a daemon thread."""
        if self._server is not None:
            raise InvalidArgument("server already started")
        self._server = http.server.HTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="pcs-http"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut down, close the socket and join the thread (idempotent)."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> PcsHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PcsHttpError(SgxSimError):
    """A PCS request answered with a non-200 status."""

    def __init__(self, status: int, url: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status} for {url}")


@dataclass(frozen=True)
class PcsReply:
    body: bytes
    headers: dict[str, str]


class PcsClient:
    """Fetch PCS v4 resources over HTTP (loopback in tests) and assemble :class:`Collateral`."""

    def __init__(self, base_url: str, *, timeout: float = 5.0, allow_remote: bool = False) -> None:
        split = urllib.parse.urlsplit(base_url)
        loopback = split.scheme == "http" and split.hostname in ("127.0.0.1", "localhost")
        if not loopback and not (allow_remote and split.scheme == "https" and split.hostname):
            allowed = "loopback http or https" if allow_remote else "loopback http"
            raise InvalidArgument(f"PcsClient talks to {allowed} only, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # Never route loopback requests through an environment proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, endpoint: str, **params: str) -> PcsReply:
        query = urllib.parse.urlencode(params)
        url = f"{self.base_url}{PCS_V4_PREFIX}{endpoint}" + (f"?{query}" if query else "")
        try:
            with self._opener.open(url, timeout=self.timeout) as resp:
                return PcsReply(resp.read(), {k: v for k, v in resp.headers.items()})
        except urllib.error.HTTPError as exc:
            exc.close()
            raise PcsHttpError(exc.code, url) from None

    def pck_cert(self, ppid: bytes, cpusvn: bytes, pcesvn: int, pce_id: bytes) -> PcsReply:
        return self.get(
            "/pckcert",
            encrypted_ppid=ppid.hex(),
            cpusvn=cpusvn.hex(),
            pcesvn=pcesvn.to_bytes(2, "little").hex(),
            pceid=pce_id[::-1].hex(),
        )

    def tcb_info(self, fmspc: bytes, *, update: str | None = None) -> tuple[str, bytes, str]:
        """``GET /tcb``: (inner tcbInfo text, signature, issuer chain PEM) as PCS v4 serves them.

        The issuer chain comes URL-encoded in the ``TCB-Info-Issuer-Chain`` header (PCS v4;
        ``SGX-TCB-Info-Issuer-Chain`` in v3 and some PCCS versions). ``ValueError`` for a body
        that is not a signed TCB Info envelope or a missing header; ``PcsHttpError`` for HTTP errors.
        """
        params = {"fmspc": fmspc.hex()}
        if update is not None:
            params["update"] = update
        reply = self.get("/tcb", **params)
        headers = {k.lower(): v for k, v in reply.headers.items()}
        chain = headers.get("tcb-info-issuer-chain") or headers.get("sgx-tcb-info-issuer-chain")
        if chain is None:
            raise ValueError("no TCB-Info-Issuer-Chain header")
        try:
            text = reply.body.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("TCB Info body is not UTF-8") from None
        body, signature = split_envelope(text.strip(), "tcbInfo")
        return body, signature, urllib.parse.unquote(chain)

    def qe_identity(self) -> tuple[str, bytes, str]:
        """``GET /qe/identity``: (inner enclaveIdentity text, signature, issuer chain PEM)."""
        reply = self.get("/qe/identity")
        headers = {k.lower(): v for k, v in reply.headers.items()}
        chain = headers.get("sgx-enclave-identity-issuer-chain")
        if chain is None:
            raise ValueError("no SGX-Enclave-Identity-Issuer-Chain header")
        try:
            text = reply.body.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("QE Identity body is not UTF-8") from None
        body, signature = split_envelope(text.strip(), "enclaveIdentity")
        return body, signature, urllib.parse.unquote(chain)

    def collateral(self, fmspc: bytes, ca: CaKind | str) -> Collateral:
        """Fetch TCB Info, QE Identity and CRLs (as dcap-qvl's ``get_collateral`` does)."""
        ca = CaKind(ca)
        tcb = self.get("/tcb", fmspc=fmspc.hex())
        qe = self.get("/qe/identity")
        pck_crl = self.get("/pckcrl", ca=ca.value, encoding="der")
        root_crl = self.get("/rootcacrl")
        tcb_body, tcb_sig = split_envelope(tcb.body.decode(), "tcbInfo")
        qe_body, qe_sig = split_envelope(qe.body.decode(), "enclaveIdentity")
        return Collateral(
            pck_crl_issuer_chain=urllib.parse.unquote(pck_crl.headers["SGX-PCK-CRL-Issuer-Chain"]),
            root_ca_crl=root_crl.body,
            pck_crl=pck_crl.body,
            tcb_info_issuer_chain=urllib.parse.unquote(tcb.headers["TCB-Info-Issuer-Chain"]),
            tcb_info=tcb_body,
            tcb_info_signature=tcb_sig,
            qe_identity_issuer_chain=urllib.parse.unquote(qe.headers["SGX-Enclave-Identity-Issuer-Chain"]),
            qe_identity=qe_body,
            qe_identity_signature=qe_sig,
        )
