"""PCS: Intel's PCK certificate selection, collateral, and the loopback PCS v4 HTTP server."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.parse
import urllib.request

import dcap_qvl
import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.attest.attest_world import FMSPC, LEVELS, NOW, PCE_ID, PPID, UTC, World, comps

from sgxsim.attest import (
    PcsClient,
    PcsHttpError,
    PcsHttpServer,
    TcbStatus,
    parse_pem_chain,
    select_pck_cert,
    split_envelope,
    verify_quote,
)
from sgxsim.errors import InvalidArgument


def tcb_of(world: World, raw: tuple[int, ...], pcesvn: int) -> tuple[tuple[int, ...], int] | None:
    cert = world.pcs.select_pck_cert(PPID, bytes(raw), pcesvn)
    return None if cert is None else (cert.extension.tcb_components, cert.extension.pcesvn)


def test_selection_picks_the_best_certificate_at_or_below_the_raw_tcb(world: World) -> None:
    up = LEVELS["uptodate"]
    assert tcb_of(world, up.components, 13) == (up.components, 13)
    # EUPDATESVN raised component 2 beyond any level: still the best certificate below it.
    assert tcb_of(world, comps(6, 9, 3, 3, 4, 1, 0, 3), 13) == (up.components, 13)
    # Component 2 one below the top: the SWHardeningNeeded certificate.
    assert tcb_of(world, comps(6, 5, 3, 3, 4, 1, 0, 3), 13) == (LEVELS["swhard"].components, 13)
    # PCESVN below 13 excludes the pcesvn-13 certificates.
    assert tcb_of(world, up.components, 12) == (LEVELS["outofdate"].components, 11)
    assert tcb_of(world, comps(0), 0) is None
    assert world.pcs.select_pck_cert(PPID, bytes(up.components), 13, pce_id=b"\x00\x01") is None


def test_selection_orders_incomparable_certificates_like_pcksorter(world: World) -> None:
    # Two incomparable certificates with PCESVN 12 land in the "outofdate" bucket (the first
    # level they are >= to); inside it the one inserted first stays ahead unless the new one is
    # >= to it, exactly as PCKSorter::sort_to_buckets; the raw TCB then takes the first it meets.
    a = world.pcs.add_pck_cert(PPID, bytes(comps(5, 9, 3, 3, 4, 1, 0, 3)), 12)
    b = world.pcs.add_pck_cert(PPID, bytes(comps(9, 5, 3, 3, 4, 1, 0, 3)), 12)
    raw = bytes(comps(9, 9, 3, 3, 4, 1, 0, 3))
    certs = world.pcs.platform(PPID).certs
    assert select_pck_cert(raw, 12, world.model, certs) == a
    assert select_pck_cert(raw, 12, world.model, [c for c in certs if c is not a]) == b
    assert select_pck_cert(bytes(comps(9, 5, 3, 3, 4, 1, 0, 3)), 12, world.model, certs) == b
    # With PCESVN 13 the "uptodate" certificate (bucket 0) wins over both.
    assert select_pck_cert(raw, 13, world.model, certs) == world.pck("uptodate")


def test_selection_with_one_certificate_per_level_equals_tcb_matching() -> None:
    world = World.build()  # read-only below: one world for every example
    tried = [0]

    @settings(max_examples=150, deadline=None, database=None)
    @given(st.tuples(*[st.integers(0, 8)] * 8), st.integers(0, 15))
    def check(head: tuple[int, ...], pcesvn: int) -> None:
        tried[0] += 1
        raw = comps(*head)
        chosen = world.pcs.select_pck_cert(PPID, bytes(raw), pcesvn)
        level = world.model.match(raw, pcesvn)
        if level is None:
            assert chosen is None
        else:
            assert chosen is not None
            assert (chosen.extension.tcb_components, chosen.extension.pcesvn) == (
                level.components,
                level.pcesvn,
            )

    check()
    assert tried[0] >= 100


def test_register_and_lookup_errors(world: World) -> None:
    with pytest.raises(InvalidArgument):
        world.pcs.platform(bytes(16))
    with pytest.raises(InvalidArgument):
        world.pcs.register_platform(ppid=bytes(16), fmspc=bytes(6))
    with pytest.raises(InvalidArgument):
        world.pcs.register_platform(ppid=bytes(16), fmspc=FMSPC, pce_id=b"\x00\x01")
    with pytest.raises(InvalidArgument):
        select_pck_cert(bytes(15), 0, world.model, [])


def test_in_process_collateral_verifies_after_a_recovery(world: World) -> None:
    event = dt.datetime(2025, 5, 20, tzinfo=UTC)
    new_tcb = comps(6, 7, 3, 3, 4, 1, 0, 3)
    world.model.publish_recovery(components=new_tcb, pcesvn=13, date=event)
    raw_after_eupdatesvn = bytes(new_tcb)
    # Before the PCS has a certificate for the new TCB, selection returns the old one (now OutOfDate).
    old = world.pcs.select_pck_cert(PPID, raw_after_eupdatesvn, 13)
    assert old is not None and old.extension.tcb_components == LEVELS["uptodate"].components
    v = verify_quote(world.quote(pck=old), world.collateral(), world.pki.root_der, NOW)
    assert v.status is TcbStatus.OUT_OF_DATE and v.superseded_at == event
    world.pcs.add_pck_cert(PPID, raw_after_eupdatesvn, 13)
    new = world.pcs.select_pck_cert(PPID, raw_after_eupdatesvn, 13)
    assert new is not None and new.extension.tcb_components == new_tcb
    v = verify_quote(world.quote(pck=new), world.collateral(), world.pki.root_der, NOW)
    assert v.status is TcbStatus.UP_TO_DATE and v.tcb_evaluation_data_number == 17  # QE identity still 17


NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with NO_PROXY.open(url, timeout=5) as resp:
            return resp.status, resp.read(), dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        exc.close()
        return exc.code, body, {}


def test_http_server_serves_pcs_v4_paths(world: World) -> None:
    clock = [NOW]
    with PcsHttpServer(world.pcs, lambda: clock[0]) as server:
        base = server.base_url
        assert urllib.parse.urlsplit(base).hostname == "127.0.0.1"
        up = LEVELS["uptodate"]
        raw_cpusvn = bytes(comps(6, 9, 3, 3, 4, 1, 0, 3))
        url = (
            f"{base}/sgx/certification/v4/pckcert?encrypted_ppid={PPID.hex()}&cpusvn={raw_cpusvn.hex()}"
            f"&pcesvn={(13).to_bytes(2, 'little').hex()}&pceid={PCE_ID[::-1].hex()}"
        )
        status, body, headers = _get(url)
        assert status == 200 and headers["Content-Type"] == "application/x-pem-file"
        cert = x509.load_pem_x509_certificate(body)
        expected = world.pcs.select_pck_cert(PPID, raw_cpusvn, 13)
        assert expected is not None and body == expected.pem
        chain = urllib.parse.unquote(headers["SGX-PCK-Certificate-Issuer-Chain"])
        assert (
            chain == world.pki.pck_ca_chain_pem("platform")
            and "%0A" in headers["SGX-PCK-Certificate-Issuer-Chain"]
        )
        assert headers["SGX-TCBm"] == (bytes(up.components) + (13).to_bytes(2, "little")).hex().upper()
        assert headers["SGX-FMSPC"] == "00906ED50000" and headers["SGX-PCK-Certificate-CA-Type"] == "platform"
        assert cert.issuer == parse_pem_chain(chain)[0].subject

        status, body, headers = _get(f"{base}/sgx/certification/v4/tcb?fmspc={FMSPC.hex()}")
        assert status == 200 and headers["Content-Type"] == "application/json"
        inner, sig = split_envelope(body.decode(), "tcbInfo")
        assert json.loads(inner)["issueDate"] == "2025-06-01T12:00:00Z" and len(sig) == 64
        assert urllib.parse.unquote(headers["TCB-Info-Issuer-Chain"]) == world.pki.tcb_signing_chain_pem()
        status, body, headers = _get(f"{base}/sgx/certification/v4/qe/identity")
        assert status == 200 and json.loads(body)["enclaveIdentity"]["id"] == "QE"
        assert "SGX-Enclave-Identity-Issuer-Chain" in headers
        status, body, headers = _get(f"{base}/sgx/certification/v4/pckcrl?ca=processor")
        assert status == 200 and body.startswith(b"-----BEGIN X509 CRL-----")
        assert urllib.parse.unquote(headers["SGX-PCK-CRL-Issuer-Chain"]) == world.pki.pck_ca_chain_pem(
            "processor"
        )
        status, body, _ = _get(f"{base}/sgx/certification/v4/pckcrl?ca=platform&encoding=der")
        assert status == 200 and x509.load_der_x509_crl(body).issuer == world.pki.ca_cert("platform").subject
        status, body, _ = _get(f"{base}/sgx/certification/v4/rootcacrl")
        assert status == 200 and x509.load_der_x509_crl(body).issuer == world.pki.root_cert.subject

        assert _get(f"{base}/sgx/certification/v4/tcb?fmspc=000000000000")[0] == 404
        assert _get(f"{base}/sgx/certification/v4/tcb?fmspc=zz")[0] == 400
        assert _get(f"{base}/sgx/certification/v4/pckcrl?ca=root")[0] == 400
        assert _get(url.replace(raw_cpusvn.hex(), bytes(16).hex()))[0] == 404
        assert _get(f"{base}/sgx/certification/v3/tcb")[0] == 404
        assert server.requests == 11

        # Collateral fetched over HTTP verifies with both verifiers.
        client = PcsClient(base)
        collateral = client.collateral(FMSPC, "platform")
        quote = world.quote(pck=expected)
        assert verify_quote(quote, collateral, world.pki.root_der, NOW).status is TcbStatus.UP_TO_DATE
        report = dcap_qvl.verify_with_root_ca(
            quote,
            dcap_qvl.QuoteCollateralV3(**collateral.as_dcap_qvl_kwargs()),
            world.pki.root_der,
            int(NOW.timestamp()),
        )
        assert report.status == "UpToDate"
        assert client.pck_cert(PPID, raw_cpusvn, 13, PCE_ID).body == expected.pem
        with pytest.raises(PcsHttpError) as info:
            client.get("/tcb", fmspc="ffffffffffff")
        assert info.value.status == 404
    with pytest.raises(urllib.error.URLError):
        NO_PROXY.open(url, timeout=2)  # stopped: nothing listens any more
    with pytest.raises(InvalidArgument):
        PcsClient("http://example.com")
    with PcsHttpServer(world.pcs, lambda: dt.datetime(2025, 6, 1)) as broken_clock:  # naive: refused
        assert _get(f"{broken_clock.base_url}/sgx/certification/v4/qe/identity")[0] == 500
