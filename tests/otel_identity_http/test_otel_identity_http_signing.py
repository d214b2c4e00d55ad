"""Signing across real processes and real HTTP hops on 127.0.0.1.

Each service is its own Python process (``signing_service.py``) with its own keys, so the
edge, a verify-only service and the last verifier hold exactly what they would in production.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.signing_helpers import HMAC_A, ed25519_private, public_of, write_jwks

SERVICE = Path(__file__).with_name("signing_service.py")
ROOT = Path(__file__).parents[2]


class Service:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}/"

    def get(self, login: str | None = None, **query: str) -> dict[str, Any]:
        headers = {"x-login": login} if login else {}
        response = requests.get(self.url, params=query, headers=headers, timeout=20)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []
    logs: list[Path] = []

    def start(next_service: Service | None = None, **settings: str) -> Service:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_IDENTITY_")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        env.update({f"OTEL_IDENTITY_{k.upper()}": v for k, v in settings.items()})
        env["SERVICE_NEXT"] = next_service.url if next_service else ""
        log = tmp_path / f"service-{len(logs)}.log"
        logs.append(log)
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, str(SERVICE)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.strip():
            process.kill()
            pytest.fail(f"service did not start: {process.wait(10)}")
        service = Service(process, int(line))
        started.append(service)
        return service

    yield start
    for service in started:
        assert service.process.stdin is not None
        service.process.stdin.close()
        try:
            service.process.wait(10)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait(10)
    for log in logs:  # the library's own errors, swallowed in the service, fail the test
        text = log.read_text()
        assert "internal error" not in text and "Traceback" not in text, text[:2000]


def _eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll until ``check`` holds, at most ``seconds`` (the key reload contract is 10 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


class TestEd25519ThreeProcesses:
    @pytest.fixture
    def keys(self, tmp_path: Path) -> dict[str, Any]:
        edge = ed25519_private("edge-1")
        return {
            "edge": edge,
            "edge_file": write_jwks(tmp_path / "edge.json", edge),
            "middle_file": write_jwks(tmp_path / "middle.json", public_of(edge)),
            "last_file": write_jwks(tmp_path / "last.json", public_of(edge)),
        }

    @pytest.fixture
    def chain(self, start_service: Callable[..., Service], keys: dict[str, Any]) -> list[Service]:
        last = start_service(keys_file=str(keys["last_file"]))
        middle = start_service(last, keys_file=str(keys["middle_file"]))
        edge = start_service(middle, keys_file=str(keys["edge_file"]), inbound="strip")
        return [edge, middle, last]

    def test_edge_mints_verify_only_service_forwards_last_verifies(
        self, chain: list[Service]
    ) -> None:
        edge = chain[0]
        answer = edge.get(login="alice")
        assert answer["user"] == "alice"
        middle = answer["next"]["answer"]
        assert middle["user"] == "alice" and middle["verified"] is True
        last = middle["next"]["answer"]
        assert last["user"] == "alice" and last["verified"] is True
        # The verify-only service forwarded the edge's token byte for byte.
        sent_by_edge = answer["next"]["sent"]
        sent_by_middle = middle["next"]["sent"]
        token = [m for m in sent_by_edge.split(",") if m.startswith("identity.sig=v2.edge-1.")]
        assert token and token[0] in sent_by_middle.split(",")

    def test_verify_only_service_cannot_mint(self, chain: list[Service]) -> None:
        middle = chain[0].get(login="alice")["next"]["answer"]
        # The middle service's own use_identity leaves unsigned, and arrives unverified.
        escalated = chain[1].get(**{"as": "root"})
        assert "identity.sig" not in (escalated["next"]["sent"] or "")
        last = escalated["next"]["answer"]
        assert last["user"] is None and last["reason"] == "untrusted"
        assert middle["verified"] is True

    def test_forged_identity_at_the_edge_goes_nowhere(self, chain: list[Service]) -> None:
        response = requests.get(
            chain[0].url,
            headers={"baggage": "user.id=mallory,tenant.id=acme,user.roles=admin"},
            timeout=20,
        ).json()
        assert response["user"] is None  # the edge strips inbound identity
        assert response["next"]["answer"]["user"] is None

    def test_key_added_or_removed_takes_effect_within_ten_seconds(
        self, start_service: Callable[..., Service], tmp_path: Path
    ) -> None:
        old, new = ed25519_private("old"), ed25519_private("new")
        verifier_file = write_jwks(tmp_path / "verifier.json", public_of(old))
        verifier = start_service(keys_file=str(verifier_file))
        edge_file = write_jwks(tmp_path / "edge.json", new)
        edge = start_service(verifier, keys_file=str(edge_file), inbound="strip")

        def seen() -> dict[str, Any]:
            return edge.get(login="alice")["next"]["answer"]  # type: ignore[no-any-return]

        assert seen()["reason"] == "unknown_key"
        write_jwks(verifier_file, public_of(old), public_of(new))
        assert _eventually(lambda: seen()["verified"] is True)
        write_jwks(verifier_file, public_of(old))
        assert _eventually(lambda: seen()["reason"] == "unknown_key")


class TestTrustLaunderingOverHttp:
    def test_trusting_service_with_keys_does_not_sign_what_it_was_told(
        self, start_service: Callable[..., Service]
    ) -> None:
        verifier = start_service(signing_keys=f"k1:{HMAC_A}", inbound="verify")
        trusting = start_service(verifier, signing_keys=f"k1:{HMAC_A}", inbound="trust")
        attack = "user.id=mallory,tenant.id=acme,user.roles=admin"
        answer = requests.get(trusting.url, headers={"baggage": attack}, timeout=20).json()
        assert answer["user"] == "mallory" and answer["roles"] == ["admin"]  # trusted here
        assert "identity.sig" not in answer["next"]["sent"]
        downstream = answer["next"]["answer"]
        assert downstream["user"] is None and downstream["verified"] is False
        assert downstream["reason"] == "untrusted"
        # Its own authentication is established here: that is signed and verifies.
        own = requests.get(
            trusting.url, headers={"baggage": attack, "x-login": "alice"}, timeout=20
        ).json()
        assert own["next"]["answer"]["user"] == "alice" and own["next"]["answer"]["verified"]


BASE = "v1.k1.99999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
CRAFTED = [
    BASE.replace("99999999", "%C2%B2"),  # "\u00b2" passes str.isdigit, fails int()
    BASE[:-3] + "%C3%A9",
    BASE + "%E2%82%AC",
    "v1.k1.1.%FF",
    BASE.replace("k1", "k%00"),
    BASE.replace("v1", "v%31%00"),
]
# Raw non-ASCII bytes are not baggage octets: the baggage parser may refuse the member (the
# identity then arrives unsigned) or the whole header; either way it is a rejection.
RAW = [BASE.replace("99999999", "\u00b2"), BASE[:-1] + "\u00e9"]


def _ask(service: Service, sig: str) -> dict[str, object]:
    header = f"user.id=u,tenant.id=acme,identity.sig={sig}"
    wire = header.encode("utf-8").decode("latin-1")  # (requests sends latin-1 as bytes)
    response = requests.get(service.url, headers={"baggage": wire}, timeout=20)
    assert response.status_code == 200, sig
    return response.json()  # type: ignore[no-any-return]


def test_crafted_tokens_through_a_real_server_are_malformed_never_errors(
    start_service: Callable[..., Service],
) -> None:
    service = start_service(signing_keys=f"k1:{HMAC_A}")
    for sig in CRAFTED:
        expected = {"user": None, "roles": [], "verified": False, "reason": "malformed"}
        assert _ask(service, sig) == expected, sig
    for sig in RAW:
        answer = _ask(service, sig)
        assert answer["user"] is None and answer["reason"] in ("malformed", "untrusted"), sig
