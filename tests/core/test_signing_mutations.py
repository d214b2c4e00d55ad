"""Mutation suite: every change to a signed identity is refused, every re-encoding accepted.

Valid v1 (HMAC) and v2 (Ed25519) tokens of several identities are minted the real way
(``inject``), then changed one thing at a time at the wire (``baggage`` header) and read back
through ``extract`` on a ``verify`` hop. A mutation is any change of what the token vouches
for or of the token itself (claims, exp, kid, version, signature bytes, tokens swapped between
identities, identity members dropped or added): none may be accepted. A re-encoding spells
the same members differently (percent-encoding, member order, W3C properties, optional
whitespace): none may be rejected. Deterministic (seeded), bounded to a few seconds.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from opentelemetry.context import Context

import otel_identity as oi
from tests.signing_helpers import carrier_for, ed25519_private, oct_jwk, public_of, write_jwks

SEED = 20261206
MIN_MUTATIONS = 10_000
IDENTITIES = [
    {"user_id": "u-42", "tenant_id": "acme"},
    {"user_id": "u-42", "tenant_id": "acme", "roles": ["admin", "analyst"]},
    {"user_id": "u-43", "tenant_id": "acme"},
    {"user_id": "ada lovelace", "tenant_id": "analytical engines", "session_id": "s-1"},
    {"user_id": "zo\u00eb", "tenant_id": "caf\u00e9", "roles": ["r\u00f4le"]},
    {"user_id": "100%+;,=", "tenant_id": 'q"b\\s', "roles": ["a;b", "c"]},
    {"tenant_id": "tenant-only"},
    {"user_id": "emoji-\U0001f600", "session_id": "s-2", "roles": ["x", "y", "z"]},
]
Member = tuple[str, str]  # (key, wire value), as in the header


def _members(header: str) -> list[Member]:
    out = []
    for raw in header.split(","):
        key, _, value = raw.partition("=")
        out.append((key.strip(), value.strip()))
    return out


def _header(members: list[Member]) -> str:
    return ",".join(f"{k}={v}" for k, v in members)


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("keys")
    ed1, ed2 = ed25519_private("ed1"), ed25519_private("ed2")
    hm1, hm2 = oct_jwk("hm1", b"1" * 32), oct_jwk("hm2", b"2" * 32)
    # v1 minter: hm1 first; v2 minter and verifier: ed1 first; both hold every kid.
    return {
        "v1": write_jwks(base / "v1.json", hm1, hm2, public_of(ed1), public_of(ed2)),
        "v2": write_jwks(base / "v2.json", ed1, public_of(ed2), hm1, hm2),
    }


@pytest.fixture
def signed(key_files: dict[str, Path]) -> dict[str, list[str]]:
    """Headers of every identity signed with each version, as they leave a service."""
    out: dict[str, list[str]] = {}
    for version in ("v1", "v2"):
        oi.configure(keys_file=str(key_files[version]))
        out[version] = [carrier_for(**claims)["baggage"] for claims in IDENTITIES]
    oi.configure(keys_file=str(key_files["v2"]), inbound="verify")
    return out


def _admitted(header: str) -> oi.Identity | None:
    return oi.get_identity(oi.extract({"baggage": header}, hop="http.server"))


# --- mutations --------------------------------------------------------------------------------

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _replace_sig(members: list[Member], token: str) -> list[Member]:
    return [(k, token if k == "identity.sig" else v) for k, v in members]


def _token_mutations(token: str, rng: random.Random) -> Iterator[str]:
    version, kid, exp, sig = token.split(".")
    for i in range(len(sig)):  # every signature character, changed (three ways)
        for other in rng.sample(ALPHABET.replace(sig[i], ""), 3):
            yield f"{version}.{kid}.{exp}.{sig[:i]}{other}{sig[i + 1 :]}"
    for i in range(len(sig)):  # every spare-bit neighbour and bit flip of a character
        flipped = ALPHABET[ALPHABET.index(sig[i]) ^ (1 << rng.randrange(6))]
        yield f"{version}.{kid}.{exp}.{sig[:i]}{flipped}{sig[i + 1 :]}"
    for delta in (1, -1, 2, 60, -60, 10**6, -int(exp)):
        yield f"{version}.{kid}.{int(exp) + delta}.{sig}"
    for spelled in ("0" + exp, exp + "0", exp[:-1], "+" + exp, exp + " ", "\u00b2", "1e9"):
        yield f"{version}.{kid}.{spelled}.{sig}"
    for other in ("hm1", "hm2", "ed1", "ed2", "nobody", kid.upper(), kid + "x", ""):
        if other != kid:
            yield f"{version}.{other}.{exp}.{sig}"
    other_version = "v2" if version == "v1" else "v1"
    for v in (other_version, "v3", "V1", "v", ""):
        yield f"{v}.{kid}.{exp}.{sig}"
    yield f"{version}.{kid}.{exp}.{sig[:-1]}"
    yield f"{version}.{kid}.{exp}.{sig}A"
    yield f"{version}.{kid}.{exp}.{sig[1:]}{sig[0]}"
    yield f"{version}.{kid}.{exp}.{sig[::-1]}"
    yield f"{version}.{kid}.{exp}.{sig}="
    yield f"{version}.{kid}.{exp}"
    yield f"{version}.{kid}.{exp}.{sig}.{sig}"


def _claim_mutations(members: list[Member], rng: random.Random) -> Iterator[list[Member]]:
    identity_keys = ("user.id", "tenant.id", "session.id", "user.roles")
    for index, (key, value) in enumerate(members):
        if key not in identity_keys:
            continue
        decoded = unquote(value)
        for _ in range(60):  # one character changed, added or removed
            pos = rng.randrange(len(decoded) + 1)
            # (spaces next to a role's comma are list whitespace, not a change: none in roles)
            choice = rng.choice("abcXYZ019-_.\u00e9" + ("" if key == "user.roles" else " "))
            edits = [
                decoded[:pos] + choice + decoded[pos:],
                decoded[:pos] + decoded[pos + 1 :],
                decoded[:pos] + choice + decoded[pos + 1 :],
            ]
            for edited in edits:
                # (not a mere change of hex case inside an escape: the same value)
                if unquote(edited) != unquote(decoded) and edited.strip() == edited:
                    yield [*members[:index], (key, quote(edited, safe="")), *members[index + 1 :]]
        yield [*members[:index], (key, value.upper() if value.upper() != value else value + "x")]
        yield members[:index] + members[index + 1 :]  # dropped
    present = {k for k, _ in members}
    for key in identity_keys:
        if key not in present:  # an identity member added
            for extra in ("admin", "acme", "s-9", "u-1"):
                yield [*members, (key, extra)]
    if "user.roles" in present:
        roles = dict(members)["user.roles"].split("%2C")
        if len(roles) > 1:  # the same roles, another order: another claim
            yield [(k, "%2C".join(roles[::-1]) if k == "user.roles" else v) for k, v in members]


def _mutations(signed: dict[str, list[str]]) -> Iterator[tuple[str, str]]:
    """(what changed, mutated header) for every signed header."""
    rng = random.Random(SEED)
    tokens = {
        version: [dict(_members(h))["identity.sig"] for h in headers]
        for version, headers in signed.items()
    }
    for headers in signed.values():
        for header in headers:
            members = _members(header)
            token = dict(members)["identity.sig"]
            for mutated in _token_mutations(token, rng):
                yield "token", _header(_replace_sig(members, quote(mutated, safe=".")))
            for swapped in [*tokens["v1"], *tokens["v2"]]:
                if swapped != token:
                    yield "swapped", _header(_replace_sig(members, swapped))
            for changed in _claim_mutations(members, rng):
                yield "claims", _header(changed)
            yield "unsigned", _header([(k, v) for k, v in members if k != "identity.sig"])


def test_no_mutation_of_a_signed_identity_is_accepted(signed: dict[str, list[str]]) -> None:
    originals = {h for headers in signed.values() for h in headers}
    for header in originals:
        assert _admitted(header) is not None  # the originals themselves are valid
    counts: dict[str, int] = {}
    accepted = []
    for kind, header in _mutations(signed):
        if header in originals:
            continue
        counts[kind] = counts.get(kind, 0) + 1
        if _admitted(header) is not None:
            accepted.append((kind, header))
    print(f"mutations tried: {sum(counts.values())} {counts}; accepted: {len(accepted)}")
    assert sum(counts.values()) >= MIN_MUTATIONS, counts
    assert accepted == [], accepted[:5]


# --- re-encodings -----------------------------------------------------------------------------

# Characters a baggage value may carry raw (W3C baggage-octet) and that every decoder reads
# as themselves: not '%' (escape), '+' (a space to OpenTelemetry Python's decoder), ';' ','.
_RAW_OK = {chr(c) for c in range(0x21, 0x7F)} - set('%+;,"\\')


def _spell(decoded: str, rng: random.Random) -> str:
    """Another spelling of the same value: any character may be percent-encoded (either hex
    case); only those that must be are always."""
    out = []
    for char in decoded:
        if char in _RAW_OK and rng.random() < 0.6:
            out.append(char)
            continue
        encoded = "".join(f"%{b:02X}" for b in char.encode("utf-8"))
        out.append(encoded.lower() if rng.random() < 0.3 else encoded)
    return "".join(out)


def _ows(rng: random.Random) -> str:
    return rng.choice(["", "", " ", "\t", "  ", " \t"])


def _reencode(header: str, rng: random.Random, *, whitespace: bool) -> str:
    members = _members(header)
    rng.shuffle(members)
    if rng.random() < 0.5:
        members.insert(rng.randrange(len(members) + 1), ("other", _spell("x y", rng)))
    parts = []
    for key, value in members:
        spelled = value if key == "identity.sig" else _spell(unquote(value), rng)
        if rng.random() < 0.3:
            spelled += rng.choice([";p=1", ";flag", ";a=b;c"])
        if whitespace:
            parts.append(f"{key}{_ows(rng)}={_ows(rng)}{spelled}")
        else:
            parts.append(f"{key}={spelled}")
    if not whitespace:
        return ",".join(parts)
    return _ows(rng) + ",".join(f"{_ows(rng)}{p}{_ows(rng)}" for p in parts) + _ows(rng)


def _check_reencodings(
    signed: dict[str, list[str]], make: Callable[[str, random.Random], str], rounds: int
) -> tuple[int, list[Any]]:
    rng = random.Random(SEED)
    rejected, total = [], 0
    for headers in signed.values():
        for header in headers:
            expected = _admitted(header)
            assert expected is not None
            for _ in range(rounds):
                variant = make(header, rng)
                total += 1
                got = _admitted(variant)
                if got != expected or got is None or not got.verified:
                    rejected.append((variant, got, expected))
    return total, rejected


def test_equivalent_encodings_order_and_properties_are_accepted(
    signed: dict[str, list[str]],
) -> None:
    total, rejected = _check_reencodings(
        signed, lambda h, rng: _reencode(h, rng, whitespace=False), 150
    )
    assert total >= 2000
    assert rejected == [], rejected[:3]


def test_optional_whitespace_in_the_header_is_accepted(signed: dict[str, list[str]]) -> None:
    total, rejected = _check_reencodings(
        signed, lambda h, rng: _reencode(h, rng, whitespace=True), 60
    )
    assert total >= 900
    assert rejected == [], rejected[:3]


def test_token_equivalents_from_the_wire_verify(signed: dict[str, list[str]]) -> None:
    """The token member itself, percent-encoded and with properties, still verifies."""
    for headers in signed.values():
        for header in headers:
            members = _members(header)
            token = dict(members)["identity.sig"]
            for spelled in (
                quote(token, safe=""),
                "".join(f"%{ord(c):02x}" for c in token),
                token + ";x=1",
                token + ";x",
            ):
                got = _admitted(_header(_replace_sig(members, spelled)))
                assert got is not None and got.verified, spelled


def test_the_suite_starts_from_a_clean_context() -> None:
    assert oi.get_identity(Context()) is None
