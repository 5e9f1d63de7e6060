"""The deployment scripts/chaos.py soaks and the clients' tally: start and stop it, kill its parts, send
calls through it and classify each outcome (chaos.py's docstring has the rules and the figures)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from chaos_tally import Tally

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "autellix"
GRACE = 3.0
"""Seconds around a part's down window in which a failure is still its death's."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    def __init__(self, name: str, engines: int) -> None:
        self.name, self.engines, self.port = name, engines, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, address: str, log: Path) -> None:
        argv = [sys.executable, "-m", "autellix.cli", "serve", "--ray", address,
                "--engines", str(self.engines), "--port", str(self.port), "--eager", "--max-num-seqs", "4",
                "--program-ttl", "7200"]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(ROOT)}
        with log.open("a") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out, env=env, start_new_session=True)

    def healthy(self) -> int:
        try:
            return httpx.get(self.url + "/health", trust_env=False, timeout=5).json()["healthy"]
        except (httpx.HTTPError, ValueError, KeyError):
            return -1


class Deployment:
    """The cluster, two replicas, two engines; the down window of every part killed."""

    def __init__(self, max_tokens: int) -> None:
        from autellix.deploy.leftovers import shm_names

        self.max_tokens = max_tokens
        self.replicas = [Replica("A", 2), Replica("B", 0)]
        self.windows: list[list[Any]] = []
        """[part, killed at, back at (inf while down)] for each kill."""
        self.kills: Counter = Counter()
        self.rss: list[float] = []
        self.restarts: list[float] = []
        self.recoveries: dict[str, list[float]] = {}
        self.started_in = 0.0
        self.shm_before = shm_names()
        self.shm_left: set[str] = set()
        self.log = Path(os.environ.get("AUTELLIX_CHAOS_LOG", "/tmp/autellix-chaos.log"))
        self.model = ""
        self.cluster: Any = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        import ray
        from ray.cluster_utils import Cluster

        from autellix.deploy.ray_engines import LOOPBACK, pin_to_loopback

        pin_to_loopback()
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 2, "node_ip_address": LOOPBACK, "include_dashboard": False})
        ray.init(address=self.cluster.address, namespace=NAMESPACE, log_to_driver=False)
        t0 = time.monotonic()
        self.replicas[0].start(self.cluster.address, self.log)
        self._wait(lambda: self.replicas[0].healthy() == 2, 900, "replica A and its two engines")
        self.started_in = time.monotonic() - t0
        self.replicas[1].start(self.cluster.address, self.log)
        self._wait(lambda: self.replicas[1].healthy() == 2, 300, "replica B")
        self.model = httpx.get(self.replicas[0].url + "/v1/models", trust_env=False).json()["data"][0]["id"]
        a, b = self.replicas
        print(f"deployment up in {self.started_in:.0f} s: A {a.url}, B {b.url}, Ray {self.cluster.address}",
              flush=True)

    def stop(self) -> None:
        import ray

        from autellix.deploy.leftovers import remove_unused, shm_in_use, shm_names

        for replica in reversed(self.replicas):  # B first; A stops the engines it started
            if replica.proc is not None and replica.proc.poll() is None:
                replica.proc.send_signal(signal.SIGTERM)
                try:
                    replica.proc.wait(180)
                except subprocess.TimeoutExpired:
                    replica.proc.kill()
        if ray.is_initialized():
            for name in ["autellix-programs", *(f"autellix-engine-{i}" for i in range(2))]:
                with contextlib.suppress(Exception):
                    ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
            ray.shutdown()
        if self.cluster is not None:
            self.cluster.shutdown()
        time.sleep(2)
        new = shm_names() - self.shm_before
        self.shm_left = new - shm_in_use(int(p) for p in os.listdir("/proc") if p.isdigit())
        remove_unused(self.shm_left)  # reported, then cleaned

    def _wait(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.5)

    async def all_up(self, timeout: float) -> None:
        await asyncio.to_thread(self._wait, lambda: all(r.healthy() == 2 for r in self.replicas), timeout,
                                "every part back")

    # -- kills -------------------------------------------------------------------------------------

    def kill(self, target: str, rng: random.Random) -> None:
        import ray

        self.kills[target] += 1
        t0 = time.monotonic()
        if target == "engine":
            i = rng.randrange(2)
            actor = ray.get_actor(f"autellix-engine-{i}", namespace=NAMESPACE)
            pid = ray.get(actor.pid.remote(), timeout=30)
            url = httpx.get(self.replicas[0].url + "/health", trust_env=False).json()["engines"][i]["url"]
            part = f"engine-{i}"
            window = self._open(part, t0)
            os.kill(pid, signal.SIGKILL)

            def back() -> bool:
                engines = httpx.get(self.replicas[0].url + "/health", trust_env=False).json()["engines"]
                return engines[i]["healthy"] and engines[i]["url"] != url

            self._wait(back, 900, f"{part} restarted")
            self.restarts.append(time.monotonic() - t0)
        elif target == "replica":
            part, replica = "replica-B", self.replicas[1]
            assert replica.proc is not None
            window = self._open(part, t0)
            replica.proc.send_signal(signal.SIGKILL)
            replica.proc.wait()
            time.sleep(3)  # a supervisor's restart delay
            replica.start(self.cluster.address, self.log)
            self._wait(lambda: replica.healthy() == 2, 300, "replica B restarted")
        else:
            part = "store"
            store = ray.get_actor("autellix-programs", namespace=NAMESPACE)
            epoch, pid = ray.get(store.hello.remote(), timeout=30)[1], ray.get(store.pid.remote(), timeout=30)
            window = self._open(part, t0)
            os.kill(pid, signal.SIGKILL)

            def new_epoch() -> bool:
                with contextlib.suppress(Exception):
                    actor = ray.get_actor("autellix-programs", namespace=NAMESPACE)
                    return ray.get(actor.hello.remote(), timeout=5)[1] != epoch
                return False

            self._wait(new_epoch, 300, "the store restarted")
        took = time.monotonic() - t0
        self.recoveries.setdefault(part.split("-")[0], []).append(took)
        window[2] = time.monotonic()
        print(f"  killed {part}: back after {took:.1f} s", flush=True)

    def _open(self, part: str, t0: float) -> list[Any]:
        window = [part, t0, float("inf")]
        self.windows.append(window)
        return window

    def dying(self, part: str, t0: float, t1: float) -> bool:
        """`part` (or any part, for "*") was down, or just killed, during [t0, t1]."""
        return any((part in ("*", name)) and start - GRACE <= t1 and t0 <= end + GRACE
                   for name, start, end in self.windows)

    # -- traffic -----------------------------------------------------------------------------------

    async def _send(self, session: aiohttp.ClientSession, tally: Tally, method: str, path: str,
                    **kwargs: Any) -> tuple[Replica, int, bytes, Any] | tuple[Replica, str, float]:
        """Through a random replica, a refused connection tried on the other: (replica, status, body,
        headers), or (replica, error, t0) when it failed after it was sent."""
        order = random.sample(self.replicas, 2)
        t0 = time.monotonic()
        for k, replica in enumerate(order):
            try:
                async with session.request(method, replica.url + path, **kwargs) as r:
                    return replica, r.status, await r.read(), r.headers
            except aiohttp.ClientConnectorError:
                if k == 0:
                    tally.rerouted += 1
                    continue
                return replica, "refused", t0
            except (TimeoutError, aiohttp.ClientError) as exc:
                return replica, type(exc).__name__, t0
        raise AssertionError("unreachable")

    async def call(self, session: aiohttp.ClientSession, tally: Tally, history: list[dict[str, str]],
                   named: str | None) -> tuple[dict[str, str] | None, str | None]:
        """One chat call: (its reply message, its program) when answered, else (None, None)."""
        tally.sent += 1
        t0 = time.monotonic()
        headers = {"X-Program-ID": named} if named else {}
        out = await self._send(session, tally, "POST", "/v1/chat/completions", headers=headers,
                               json={"model": self.model, "messages": history, "max_tokens": self.max_tokens})
        if len(out) == 3:
            replica, error, _ = out
            if error == "TimeoutError":
                tally.lose("no answer within the timeout")
            elif self.dying(f"replica-{replica.name}", t0, time.monotonic()):
                tally.dying += 1
            else:
                tally.lose(f"{error} from replica {replica.name}")
            return None, None
        replica, status, body, resp_headers = out
        if status == 200:
            try:
                data = json.loads(body)
                message = data["choices"][0]["message"]
                assert isinstance(message["content"], str) and data["usage"]["completion_tokens"] > 0
                program = resp_headers["x-autellix-program"]
                assert named is None or program == named
            except (ValueError, KeyError, IndexError, TypeError, AssertionError):
                tally.lose("answered wrongly")
                return None, None
            tally.answered += 1
            tally.acked[program] += 1
            return {"role": "assistant", "content": message["content"]}, program
        engine = ""
        with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
            engine = json.loads(body)["error"].get("engine") or ""
        part = engine or "*"
        if status in (502, 503) and self.dying(part, t0, time.monotonic()):
            tally.dying += 1
        else:
            tally.lose(f"status {status} {engine}".strip())
        return None, None

    async def list_models(self, session: aiohttp.ClientSession, tally: Tally) -> None:
        tally.reads += 1
        t0 = time.monotonic()
        out = await self._send(session, tally, "GET", "/v1/models")
        if len(out) == 4 and out[1] == 200 and b'"data"' in out[2]:
            return
        if len(out) == 3 and self.dying(f"replica-{out[0].name}", t0, time.monotonic()):
            tally.dying += 1
            return
        tally.reads_failed += 1
        tally.why[f"GET /v1/models: {out[1]}"] += 1

    async def read_entry(self, session: aiohttp.ClientSession, tally: Tally, program: str) -> None:
        """The program's completed calls as a random replica sees it: never below what that replica
        showed before; never missing."""
        replica = random.choice(self.replicas)
        try:
            async with session.get(f"{replica.url}/v1/programs/{program}") as r:
                status, body = r.status, await r.json(content_type=None) if r.status in (200, 404) else {}
        except (TimeoutError, aiohttp.ClientError):
            return  # that replica is being killed: reads are checked when it answers
        if status == 404:
            tally.backwards += 1
            tally.why[f"program {program} missing on {replica.name}"] += 1
            return
        if status == 503:
            tally.reads_unavailable += 1
        if status != 200:
            return
        key = (program, replica.name)
        calls = body["completed_calls"]
        if calls < tally.max_read.get(key, 0):
            tally.backwards += 1
            tally.why[f"{program} on {replica.name}: {calls} < {tally.max_read[key]}"] += 1
        tally.max_read[key] = max(calls, tally.max_read.get(key, 0))

    async def final_check(self, session: aiohttp.ClientSession, tally: Tally) -> None:
        for program, answered in tally.acked.items():
            for replica in self.replicas:
                async with session.get(f"{replica.url}/v1/programs/{program}") as r:
                    calls = (await r.json())["completed_calls"] if r.status == 200 else -1
                if calls < answered:
                    tally.short += 1
                    tally.why[f"{program} on {replica.name}: {calls} < {answered} answered"] += 1
                    break

