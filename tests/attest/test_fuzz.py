"""Bad input: parse_quote / verify_quote only ever return or raise VerificationError.

Each property counts its examples and asserts (and prints) how many were tried. Mutations of
valid quotes must fail with the reason of the region they hit, except where QVL itself ignores
the change: bytes after the signature data, and PEM text that decodes to the same certificates
(QVL's ``CertificateChain::parse`` / ``PEM_read_bio_X509`` read PEM leniently). Then the
verdict must be the original one.
"""

from __future__ import annotations

import datetime as dt
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.attest.attest_world import NOW, PKI_NOT_AFTER, PKI_NOT_BEFORE, World

from sgxsim.attest import Collateral, VerificationReason, parse_pem_chain, parse_quote, verify_quote
from sgxsim.attest.pki import pem_chain
from sgxsim.errors import VerificationError

R = VerificationReason
EXAMPLES = 250
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
CHAIN_REASONS = {R.MALFORMED_CERT_CHAIN, R.CERT_SIGNATURE_INVALID, R.UNTRUSTED_ROOT, R.CERT_NAME_MISMATCH}


def regions(quote: bytes) -> list[tuple[int, int, set[R]]]:
    """Byte ranges of a valid v3/v4 quote and the reasons a change there must produce."""
    out: list[tuple[int, int, set[R]]] = [
        (0, 2, {R.UNSUPPORTED_QUOTE_VERSION}),
        (2, 4, {R.UNSUPPORTED_ATT_KEY_TYPE}),
        (4, 8, {R.UNSUPPORTED_TEE_TYPE}),
        (8, 12, {R.QUOTE_SIGNATURE_INVALID}),
        (12, 28, {R.UNSUPPORTED_QE_VENDOR}),
        (28, 432, {R.QUOTE_SIGNATURE_INVALID}),
        (432, 436, {R.MALFORMED_QUOTE}),
        (436, 500, {R.QUOTE_SIGNATURE_INVALID}),
        (500, 564, {R.QE_REPORT_DATA_MISMATCH}),
    ]
    base = 564
    if quote[0] == 4:
        out += [(564, 566, {R.UNSUPPORTED_CERT_DATA_TYPE}), (566, 570, {R.MALFORMED_QUOTE})]
        base = 570
    (auth_len,) = struct.unpack_from("<H", quote, base + 448)
    cert = base + 450 + auth_len
    out += [
        (base, base + 448, {R.QE_REPORT_SIGNATURE_INVALID}),
        (base + 448, base + 450, {R.MALFORMED_QUOTE}),
        (base + 450, cert, {R.QE_REPORT_DATA_MISMATCH}),
        (cert, cert + 2, {R.UNSUPPORTED_CERT_DATA_TYPE}),
        # v3: a smaller size leaves bytes after the certification data, which QVL ignores.
        (cert + 2, cert + 6, {R.MALFORMED_QUOTE} | (CHAIN_REASONS if quote[0] == 3 else set())),
        (cert + 6, len(quote), CHAIN_REASONS),
    ]
    return out


def same_certificates(original: bytes | str, changed: bytes | str) -> bool:
    """The change left the PEM decoding to the same certificates (a benign PEM edit)."""
    try:
        before = [c.tbs_certificate_bytes + c.signature for c in parse_pem_chain(original)]
        after = [c.tbs_certificate_bytes + c.signature for c in parse_pem_chain(changed)]
    except VerificationError:
        return False
    return before == after


def expected_reasons(quote: bytes, pos: int) -> set[R]:
    return next(reasons for start, end, reasons in regions(quote) if start <= pos < end)


@pytest.fixture(scope="module")
def fixed() -> tuple[World, dict[int, bytes], Collateral]:
    world = World.build(seed=7)
    quotes = {3: world.quote("swhard", version=3), 4: world.quote("swhard", version=4)}
    return world, quotes, world.collateral()


def _report(name: str, tried: int) -> None:
    print(f"{name}: {tried} inputs tried")
    assert tried >= EXAMPLES // 2, f"{name}: only {tried} examples ran"


def test_parse_quote_arbitrary_bytes() -> None:
    tried = [0]

    @SETTINGS
    @given(st.binary(max_size=2048))
    def check(data: bytes) -> None:
        tried[0] += 1
        try:
            parse_quote(data)
        except VerificationError as exc:
            assert isinstance(exc.reason, R)

    check()
    _report("parse_quote(arbitrary)", tried[0])


def test_parse_quote_structured_garbage(fixed: tuple[World, dict[int, bytes], Collateral]) -> None:
    """Valid header and body followed by random signature data of a random claimed length."""
    _, quotes, _ = fixed
    tried = [0]

    @SETTINGS
    @given(st.sampled_from([3, 4]), st.integers(0, 5000), st.binary(max_size=1500))
    def check(version: int, claimed: int, tail: bytes) -> None:
        tried[0] += 1
        data = quotes[version][:432] + struct.pack("<I", claimed) + tail
        try:
            parse_quote(data)
        except VerificationError as exc:
            assert exc.reason in {R.MALFORMED_QUOTE, R.UNSUPPORTED_CERT_DATA_TYPE}

    check()
    _report("parse_quote(structured)", tried[0])


@pytest.mark.parametrize("version", [3, 4])
def test_verify_bit_flips_fail_with_the_region_reason(
    fixed: tuple[World, dict[int, bytes], Collateral], version: int
) -> None:
    world, quotes, collateral = fixed
    quote = quotes[version]
    assert verify_quote(quote, collateral, world.pki.root_der, NOW).accepted
    tried = [0]

    @SETTINGS
    @given(st.integers(0, len(quote) - 1), st.integers(0, 7))
    def check(pos: int, bit: int) -> None:
        tried[0] += 1
        raw = bytearray(quote)
        raw[pos] ^= 1 << bit
        try:
            v = verify_quote(bytes(raw), collateral, world.pki.root_der, NOW)
        except VerificationError as exc:
            assert exc.reason in expected_reasons(quote, pos), (pos, exc)
        else:
            chain = parse_quote(quote).certification_data.data
            assert same_certificates(chain, parse_quote(bytes(raw)).certification_data.data), pos
            assert v.status.value == "SWHardeningNeeded"

    check()
    _report(f"verify_quote(v{version} bit flips)", tried[0])


def test_verify_truncations_and_extensions(fixed: tuple[World, dict[int, bytes], Collateral]) -> None:
    world, quotes, collateral = fixed
    tried = [0]

    @SETTINGS
    @given(st.sampled_from([3, 4]), st.integers(0, 1500), st.binary(min_size=1, max_size=64), st.booleans())
    def check(version: int, cut: int, extra: bytes, append: bool) -> None:
        tried[0] += 1
        quote = quotes[version]
        if append:  # ignored, as QVL's Quote::parse does
            assert verify_quote(quote + extra, collateral, world.pki.root_der, NOW).status.value == (
                "SWHardeningNeeded"
            )
            return
        with pytest.raises(VerificationError) as info:
            verify_quote(quote[: min(cut, len(quote) - 1)], collateral, world.pki.root_der, NOW)
        assert info.value.reason is R.MALFORMED_QUOTE

    check()
    _report("verify_quote(truncate/extend)", tried[0])


def test_verify_wrong_lengths_and_offsets(fixed: tuple[World, dict[int, bytes], Collateral]) -> None:
    """Rewrite one of the length fields (signature data, auth data, certification data)."""
    world, quotes, collateral = fixed
    tried = [0]

    @SETTINGS
    @given(st.sampled_from([3, 4]), st.sampled_from(["sig", "auth", "cert", "outer"]), st.integers(0, 0xFFFF))
    def check(version: int, which: str, value: int) -> None:
        quote = bytearray(quotes[version])
        base = 570 if version == 4 else 564
        (auth_len,) = struct.unpack_from("<H", quote, base + 448)
        offsets = {
            "sig": (432, "<I"),
            "auth": (base + 448, "<H"),
            "cert": (base + 450 + auth_len + 2, "<I"),
            "outer": (566, "<I") if version == 4 else (432, "<I"),
        }
        off, fmt = offsets[which]
        (old,) = struct.unpack_from(fmt, quote, off)
        if value == old:
            return
        tried[0] += 1
        struct.pack_into(fmt, quote, off, value)
        try:
            v = verify_quote(bytes(quote), collateral, world.pki.root_der, NOW)
        except VerificationError as exc:
            shorter_v3_chain = version == 3 and which == "cert" and value < old
            allowed = {R.MALFORMED_QUOTE} | (CHAIN_REASONS if shorter_v3_chain else set())
            assert exc.reason in allowed, (which, value, exc)
        else:  # only a v3 chain cut in its final newline: the same certificates
            assert version == 3 and which == "cert" and old - value <= 2, (which, value)
            assert v.status.value == "SWHardeningNeeded"

    check()
    _report("verify_quote(length fields)", tried[0])


COLLATERAL_REASONS = {
    "tcb_info": {R.TCB_INFO_SIGNATURE_INVALID},
    "qe_identity": {R.QE_IDENTITY_SIGNATURE_INVALID},
    "tcb_info_signature": {R.TCB_INFO_SIGNATURE_INVALID},
    "qe_identity_signature": {R.QE_IDENTITY_SIGNATURE_INVALID},
    "root_ca_crl": {R.MALFORMED_CRL, R.CRL_SIGNATURE_INVALID, R.CRL_ISSUER_MISMATCH},
    "pck_crl": {R.MALFORMED_CRL, R.CRL_SIGNATURE_INVALID, R.CRL_ISSUER_MISMATCH},
    "tcb_info_issuer_chain": CHAIN_REASONS,
    "qe_identity_issuer_chain": CHAIN_REASONS,
    "pck_crl_issuer_chain": CHAIN_REASONS | {R.CRL_ISSUER_MISMATCH},
}


def test_verify_tampered_collateral(fixed: tuple[World, dict[int, bytes], Collateral]) -> None:
    world, quotes, collateral = fixed
    tried = [0]

    @SETTINGS
    @given(st.sampled_from(sorted(COLLATERAL_REASONS)), st.integers(0, 10**6), st.integers(0, 7))
    def check(field: str, where: int, bit: int) -> None:
        value = getattr(collateral, field)
        raw = bytearray(value.encode() if isinstance(value, str) else value)
        pos = where % len(raw)
        raw[pos] ^= 1 << bit
        try:
            changed: str | bytes = raw.decode() if isinstance(value, str) else bytes(raw)
        except UnicodeDecodeError:
            return
        tried[0] += 1
        try:
            v = verify_quote(quotes[3], collateral.replace(**{field: changed}), world.pki.root_der, NOW)
        except VerificationError as exc:
            assert exc.reason in COLLATERAL_REASONS[field], (field, pos, exc)
        else:
            assert field.endswith("_chain") and same_certificates(value, changed), (field, pos)
            assert v.status.value == "SWHardeningNeeded"

    check()
    _report("verify_quote(tampered collateral)", tried[0])


def test_verify_swapped_certificates(fixed: tuple[World, dict[int, bytes], Collateral]) -> None:
    """Any permutation or replacement of the chain's certificates is refused."""
    world, _, collateral = fixed
    other = World.build(seed=8)
    pool = [
        world.pck("swhard").cert,
        world.pck("uptodate").cert,
        world.pki.ca_cert("platform"),
        world.pki.ca_cert("processor"),
        world.pki.root_cert,
        world.pki.tcb_signing_cert,
        other.pck("swhard").cert,
        other.pki.ca_cert("platform"),
        other.pki.root_cert,
    ]
    original = (0, 2, 4)
    tried = [0]

    @SETTINGS
    @given(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=4))
    def check(picks: list[int]) -> None:
        if tuple(picks) in (original, original[:2]):
            return
        tried[0] += 1
        chain = pem_chain(*(pool[i] for i in picks))
        quote = world.quote("swhard", pck=world.pck("swhard"), chain=chain)
        with pytest.raises(VerificationError) as info:
            verify_quote(quote, collateral, world.pki.root_der, NOW)
        assert info.value.reason in CHAIN_REASONS | {
            R.CRL_ISSUER_MISMATCH,
            R.QE_REPORT_SIGNATURE_INVALID,
        }, (picks, info.value)

    check()
    _report("verify_quote(swapped certificates)", tried[0])


def test_verify_time_travel(fixed: tuple[World, dict[int, bytes], Collateral]) -> None:
    """Any ``now``: either the collateral window holds and the status is stable, or a time reason."""
    world, quotes, collateral = fixed
    window = (NOW, NOW + dt.timedelta(days=30))
    time_reasons = {
        R.CRL_EXPIRED,
        R.CRL_NOT_YET_VALID,
        R.TCB_INFO_EXPIRED,
        R.TCB_INFO_NOT_YET_VALID,
        R.QE_IDENTITY_EXPIRED,
        R.QE_IDENTITY_NOT_YET_VALID,
        R.CERT_EXPIRED,
        R.CERT_NOT_YET_VALID,
    }
    tried = [0]

    @SETTINGS
    @given(
        st.datetimes(
            PKI_NOT_BEFORE.replace(tzinfo=None) - dt.timedelta(days=400),
            PKI_NOT_AFTER.replace(tzinfo=None) + dt.timedelta(days=400),
            timezones=st.just(dt.UTC),
        )
    )
    def check(now: dt.datetime) -> None:
        tried[0] += 1
        try:
            v = verify_quote(quotes[3], collateral, world.pki.root_der, now)
        except VerificationError as exc:
            assert exc.reason in time_reasons and not window[0] <= now <= window[1]
        else:
            assert window[0] <= now <= window[1] and v.status.value == "SWHardeningNeeded"

    check()
    _report("verify_quote(time travel)", tried[0])
