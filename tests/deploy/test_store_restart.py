"""The shared process table across real processes: a one-machine Ray cluster on loopback, the
ProgramStore actor in its own worker process, three gateway replicas each in its own process
(replica_process.py) in front of one FAKE engine (an in-process fake_engine: the store is under test,
not vLLM).

In order: an unmodified agent (no program id: inferred from its conversation) whose calls alternate
between two replica processes is one program; the store is killed twice (`ray.kill(no_restart=False)`,
then SIGKILL of its worker), calls are answered meanwhile, and after each restart (seen from the store's
own epoch and pid) a replica that never served the program reads it with exactly its acknowledged
calls, and the agent is still one program. Last, the one-machine cluster `autellix serve --ray` starts
(no address) is on loopback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ray = pytest.importorskip("ray")

from fake_engine import FakeEngine, ServerThread, free_port  # noqa: E402
from served_harness import eventually  # noqa: E402

from autellix.deploy.program_store import STORE_NAME  # noqa: E402
from autellix.deploy.ray_engines import LOOPBACK, pin_to_loopback  # noqa: E402

NAMESPACE = "autellix-store-test"
ROOT = Path(__file__).parents[2]


class Deployment:
    def __init__(self, replicas: list[httpx.Client]) -> None:
        self.replicas = replicas
        self.history: list[dict[str, str]] = [{"role": "system", "content": "You are an agent."}]
        self.turn = 0

    def store(self) -> object:
        return ray.get_actor(STORE_NAME, namespace=NAMESPACE)

    def epoch(self) -> int | None:
        """The store's incarnation; None while Ray restarts it (the actor answers "unavailable" then:
        how long that lasts depends on the machine's load)."""
        try:
            return ray.get(self.store().hello.remote(), timeout=10)[1]
        except (ValueError, ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError,
                ray.exceptions.GetTimeoutError):
            return None

    def agent_call(self, replica: int) -> str:
        """The agent's next turn (its history plus a new user message) through `replica`; the program
        the gateway put it in."""
        self.turn += 1
        messages = [*self.history, {"role": "user", "content": f"step {self.turn}: go on"}]
        r = self.replicas[replica].post("/v1/chat/completions",
                                        json={"model": "m", "messages": messages, "max_tokens": 3})
        assert r.status_code == 200, r.text
        self.history = [*messages, r.json()["choices"][0]["message"]]
        return r.headers["x-autellix-program"]

    def named_call(self, replica: int, program: str) -> None:
        r = self.replicas[replica].post("/v1/completions", headers={"X-Program-ID": program},
                                        json={"model": "m", "prompt": "hi", "max_tokens": 2})
        assert r.status_code == 200, r.text

    def calls(self, replica: int, program: str) -> int:
        r = self.replicas[replica].get(f"/v1/programs/{program}")
        return r.json()["completed_calls"] if r.status_code == 200 else -1


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    from ray.cluster_utils import Cluster

    pin_to_loopback()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": LOOPBACK,
                                                            "include_dashboard": False})
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False)
    engine = ServerThread(FakeEngine().app).start()
    procs: list[subprocess.Popen] = []
    clients: list[httpx.Client] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        for _ in range(3):
            port = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("replica_process.py")),
                 "--ray", cluster.address, "--namespace", NAMESPACE, "--port", str(port),
                 "--engine", engine.url], env=env))
            clients.append(httpx.Client(base_url=f"http://{LOOPBACK}:{port}", trust_env=False, timeout=30))
        for proc, client in zip(procs, clients, strict=True):
            def up(proc: subprocess.Popen = proc, client: httpx.Client = client) -> bool:
                assert proc.poll() is None, f"replica exited with {proc.returncode}"
                return client.get("/health").json()["healthy"] == 1

            eventually(up, 120, "a replica process to serve")
        yield Deployment(clients)
    finally:
        for client in clients:
            client.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        engine.stop()
        try:
            ray.kill(ray.get_actor(STORE_NAME, namespace=NAMESPACE), no_restart=True)
        except ValueError:
            pass
        ray.shutdown()
        cluster.shutdown()


def test_an_agent_alternating_between_two_replica_processes_is_one_program(deployment: Deployment) -> None:
    programs = {deployment.agent_call(k % 2) for k in range(6)}
    assert len(programs) == 1, programs
    program = programs.pop()
    eventually(lambda: deployment.calls(2, program) == 6, 30, "every turn in the shared entry")


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
def test_a_replica_that_never_saw_a_program_reads_all_its_acknowledged_calls_after_a_store_restart(
        deployment: Deployment, how: str) -> None:
    program = f"durable-{how}"
    for _ in range(5):
        deployment.named_call(0, program)
    agent = deployment.agent_call(0)
    store = deployment.store()
    epoch, pid = ray.get(store.hello.remote())[1], ray.get(store.pid.remote())
    if how == "ray.kill":
        ray.kill(store, no_restart=False)
    else:
        os.kill(pid, signal.SIGKILL)
    for _ in range(2):  # answered while the store is dead or restarting: acknowledged too
        deployment.named_call(0, program)
    eventually(lambda: deployment.epoch() not in (None, epoch), 120, "Ray to restart the store")
    assert ray.get(deployment.store().pid.remote()) != pid  # a new incarnation
    eventually(lambda: deployment.calls(2, program) == 7, 60, "replica 2 to read all 7 calls")
    assert deployment.calls(2, program) == 7 and deployment.calls(1, program) == 7  # none twice
    assert deployment.agent_call(1) == agent  # the agent is still one program


def test_a_one_machine_cluster_serve_starts_is_pinned_to_loopback() -> None:
    """What `autellix serve --ray` with no address starts (init_ray(None)), in a fresh process: every
    node's address and a worker's view of its node are 127.0.0.1."""
    probe = ("import ray\n"
             "from autellix.deploy.ray_engines import init_ray\n"
             "init_ray(None)\n"
             "ip = ray.get(ray.remote(num_cpus=0)(lambda: ray.util.get_node_ip_address()).remote())\n"
             "print(sorted({n['NodeManagerAddress'] for n in ray.nodes()}), ip)\n"
             "ray.shutdown()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == f"['{LOOPBACK}'] {LOOPBACK}"
