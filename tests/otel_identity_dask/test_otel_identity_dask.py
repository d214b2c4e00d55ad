"""Dask against a real LocalCluster with worker processes: identity per task, never another's."""

from __future__ import annotations

import base64
import os
import random
from collections.abc import Iterator
from pathlib import Path

import dask
import dask.bag
import pytest
from dask import delayed
from distributed import Client, LocalCluster
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from otel_identity_dask import DaskIdentityInstrumentor
from otel_identity_dask._task import TaskCall, carrier_of_current, identity_digest

import otel_identity as oi
from tests.otel_identity_dask import dask_tasks as tasks

KEY = base64.b64encode(b"k" * 32).decode()
TIMEOUT = 60


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """One cluster per module: two worker processes of two threads, loopback, no dashboard."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        yield dask_client


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    DaskIdentityInstrumentor().instrument()
    yield
    DaskIdentityInstrumentor().uninstrument()


class TestIdentityPerTask:
    def test_thousand_tasks_with_random_identities_never_mix(self, client: Client) -> None:
        rng = random.Random(16)
        expected: dict[int, tuple[str | None, str | None]] = {}
        futures = []
        for tag in range(900):
            if rng.random() < 0.1:  # no identity: must see none, never the previous task's
                expected[tag] = (None, None)
                futures.append(client.submit(tasks.whoami, tag, pure=False))
                continue
            user, tenant = f"u-{rng.randrange(200)}", f"t-{rng.randrange(20)}"
            expected[tag] = (user, tenant)
            with oi.use_identity(user_id=user, tenant_id=tenant):
                futures.append(client.submit(tasks.whoami, tag))
        for batch in range(4):  # map: one identity for the whole batch
            tags = list(range(900 + batch * 25, 925 + batch * 25))
            with oi.use_identity(user_id=f"m-{batch}", tenant_id=f"mt-{batch}"):
                futures.extend(client.map(tasks.whoami, tags))
            expected.update(dict.fromkeys(tags, (f"m-{batch}", f"mt-{batch}")))
        results = client.gather(futures)
        assert len(results) == 1000
        mismatches = [r for r in results if r[1:] != expected[r[0]]]
        stale = [r for r in results if expected[r[0]] == (None, None) and r[1] is not None]
        assert (len(mismatches), len(stale)) == (0, 0)
        assert len(client.scheduler_info()["workers"]) == 2

    def test_same_pure_call_from_two_tenants_gives_each_its_own_result(
        self, client: Client
    ) -> None:
        with oi.use_identity(user_id="u-1", tenant_id="acme"):
            acme = client.submit(tasks.tenant_of, 7)
            acme_again = client.submit(tasks.tenant_of, 7)
        with oi.use_identity(user_id="u-2", tenant_id="globex"):
            globex = client.submit(tasks.tenant_of, 7)
        assert acme.key != globex.key
        assert acme.key == acme_again.key  # one identity's pure call is still shared
        assert acme.key.startswith("tenant_of-")  # the user's function names the task
        assert client.gather([acme, globex]) == [(7, "acme"), (7, "globex")]

    def test_task_without_identity_records_missing_on_its_first_span(self, client: Client) -> None:
        report = client.submit(tasks.first_span_events, pure=False).result(TIMEOUT)
        assert report["hop"] == "task"
        assert report["outcome"] == "missing"
        missing = [attrs for name, attrs in report["events"] if name == "identity.missing"]
        assert len(missing) == 1
        assert missing[0]["identity.hop"] == "task"

    def test_task_with_identity_records_no_missing_and_continues_the_callers_trace(
        self, client: Client, tracer: trace.Tracer
    ) -> None:
        with (
            oi.use_identity(user_id="u-1", tenant_id="acme"),
            tracer.start_as_current_span("submit") as caller,
        ):
            report = client.submit(tasks.first_span_events, pure=False).result(TIMEOUT)
        assert (report["hop"], report["outcome"]) == ("task", "present")
        assert report["events"] == []
        context = caller.get_span_context()
        assert report["trace"] == (context.trace_id, context.span_id)


class TestCollections:
    def _graph(self) -> object:
        parts = [delayed(tasks.tenant_of)(i) for i in range(3)]
        return delayed(tasks.add_tenant)(parts)

    def test_delayed_graph_runs_every_task_under_the_callers_identity(self, client: Client) -> None:
        graph = self._graph()
        with oi.use_identity(user_id="u-1", tenant_id="acme"):
            acme = client.compute(graph)
        with oi.use_identity(user_id="u-2", tenant_id="globex"):
            globex = client.compute(graph)
        assert acme.key != globex.key
        assert acme.result(TIMEOUT) == [(i, "acme", "acme") for i in range(3)]
        assert globex.result(TIMEOUT) == [(i, "globex", "globex") for i in range(3)]

    def test_dask_compute_and_persist_through_the_client_carry_identity(
        self, client: Client
    ) -> None:
        bag = dask.bag.from_sequence(range(4), npartitions=2).map(tasks.tenant_of)
        with oi.use_identity(user_id="u-3", tenant_id="initech"):
            (computed,) = dask.compute(self._graph())
            persisted = bag.persist()
            from_method = self._graph().compute()
        assert computed == from_method == [(i, "initech", "initech") for i in range(3)]
        assert sorted(persisted.compute()) == [(i, "initech") for i in range(4)]

    def test_graph_computed_without_identity_runs_tasks_without_one(self, client: Client) -> None:
        with oi.use_identity(user_id="u-1", tenant_id="acme"):
            client.compute(self._graph()).result(TIMEOUT)
        assert client.compute(self._graph()).result(TIMEOUT) == [(i, None, None) for i in range(3)]

    def test_every_dask_internal_relied_on_is_still_there(self) -> None:
        # Fails loudly when a Dask upgrade moves the task spec: see otel_identity_dask._graphs.
        from otel_identity_dask import _graphs

        assert _graphs.missing() == []


class TestWorkersAndRetries:
    def test_resolver_set_only_in_the_client_environment_runs_in_the_worker(
        self, client: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Set after the workers started: only the settings plugin can bring it to them.
        resolver = "tests.otel_identity_dask.dask_tasks:load_user"
        monkeypatch.setenv("OTEL_IDENTITY_RESOLVER", resolver)
        with oi.use_identity(user_id="u-7", tenant_id="acme"):
            user = client.submit(tasks.resolved_user, pure=False).result(TIMEOUT)
        assert user["name"] == "u-7@acme"
        assert user["pid"] != os.getpid()

    def test_a_task_submitting_a_task_hands_its_own_identity_on(self, client: Client) -> None:
        with oi.use_identity(user_id="u-5", tenant_id="hooli"):
            inner = client.submit(tasks.nested_whoami, "inner", pure=False).result(TIMEOUT)
        assert inner == ("inner", "u-5", "hooli")

    def test_retried_task_keeps_its_identity_after_its_worker_dies(
        self, client: Client, tmp_path: Path
    ) -> None:
        with oi.use_identity(user_id="u-9", tenant_id="initech"):
            future = client.submit(tasks.die_once, str(tmp_path / "died"), pure=False)
        retried, user, tenant = future.result(TIMEOUT)
        assert retried is True  # the result came from another worker process
        assert (user, tenant) == ("u-9", "initech")
        client.wait_for_workers(2, timeout=TIMEOUT)


class TestSigning:
    def test_signed_identity_verifies_in_the_worker(
        self, client: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_IDENTITY_SIGNING_KEYS", f"k1:{KEY}")
        with oi.use_identity(user_id="u-1", tenant_id="acme"):
            report = client.submit(tasks.verification, pure=False).result(TIMEOUT)
        assert report == {"user_id": "u-1", "verified": True, "outcome": "present", "reason": None}

    def test_tampered_identity_is_rejected_in_the_worker(
        self, client: Client, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_IDENTITY_SIGNING_KEYS", f"k1:{KEY}")
        with oi.use_identity(user_id="u-1", tenant_id="acme"):
            client.submit(tasks.verification, pure=False).result(TIMEOUT)  # settings applied
            carrier = carrier_of_current()
        assert "tenant.id=acme" in carrier["baggage"]
        carrier["baggage"] = carrier["baggage"].replace("tenant.id=acme", "tenant.id=globex")
        forged = TaskCall(tasks.verification, carrier, identity_digest(None))
        report = client.submit(forged, pure=False).result(TIMEOUT)
        assert report["user_id"] is None
        assert (report["outcome"], report["reason"]) == ("rejected", "bad_signature")


class TestInstrumentor:
    def test_instrument_twice_wraps_once_and_uninstrument_restores(self, client: Client) -> None:
        DaskIdentityInstrumentor().instrument()
        assert not hasattr(Client.submit.__wrapped__, "__wrapped__")
        DaskIdentityInstrumentor().uninstrument()
        assert not hasattr(Client.submit, "__wrapped__")
        for method in ("map", "compute", "persist"):
            assert not hasattr(getattr(Client, method), "__wrapped__")
        assert not hasattr(dask.compute, "__wrapped__")
        with oi.use_identity(user_id="u-1", tenant_id="acme"):
            assert client.submit(tasks.whoami, "plain", pure=False).result(TIMEOUT) == (
                "plain",
                None,
                None,
            )
        DaskIdentityInstrumentor().instrument()

    def test_suppressed_instrumentation_submits_the_plain_callable(self, client: Client) -> None:
        with oi.use_identity(user_id="u-1", tenant_id="acme"), suppress_instrumentation():
            result = client.submit(tasks.whoami, "quiet", pure=False).result(TIMEOUT)
        assert result == ("quiet", None, None)


class TestSettingsPlugin:
    def test_plugin_never_shows_the_values_it_carries(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from otel_identity_dask import settings_plugin

        monkeypatch.setenv("OTEL_IDENTITY_SIGNING_KEYS", f"k1:{KEY}")
        plugin = settings_plugin()
        assert plugin.environment == {"OTEL_IDENTITY_SIGNING_KEYS": f"k1:{KEY}"}
        assert KEY not in repr(plugin)

    def test_a_worker_in_the_clients_own_process_keeps_the_settings_made_in_code(self) -> None:
        from otel_identity_dask._settings import IdentitySettingsPlugin

        oi.configure(tenant_key="org.id")
        # Applied, this environment would fail (an unknown inbound policy) and reset the key.
        IdentitySettingsPlugin({"OTEL_IDENTITY_INBOUND": "bogus"}).setup(worker=None)
        assert oi.get_settings().tenant_key == "org.id"
        assert "OTEL_IDENTITY_INBOUND" not in os.environ
