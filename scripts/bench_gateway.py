"""Gateway overhead and throughput against a fast local fake upstream (a benchmark, not a test).

Three processes: a minimal asyncio HTTP/1.1 upstream posing as an engine (answers instantly with a
fixed chat completion + usage), one gateway process (uvicorn + the Autellix app) in front of it, and
this load generator (raw keep-alive HTTP/1.1 over asyncio, to spend as little CPU as possible).

Figures printed:
  overhead p50   = p50 latency through the gateway - p50 latency straight to the upstream, one call at a
                   time (the gateway's added latency per call);
  calls/s        = completed calls per second through the gateway at --concurrency connections.
Targets (issue 5): overhead p50 <= 2 ms, >= 500 calls/s on a 2-core machine.

Program inference (--history-tokens N, default 32768; 0 skips it): calls that name no program, each a
history of N tokens (~4 characters each, ~100 messages) extending an earlier reply, sent to two gateway
processes side by side, one inferring programs from the conversation and one with it off; blocks of
calls alternate between them. Prints the p50 latency of each (and their difference: the cost of
inference) and the calls/s of each at --concurrency connections. Targets (issue 16): p50 overhead with
inference on <= 1 ms more than off; throughput within 10% of off.

Shared program state (issue 18; needs Ray, `--no-ray` skips it): a gateway replica whose process
table is shared through a ProgramStore actor (as under `autellix serve --ray`) against a plain gateway,
one call at a time on one program, blocks alternating; prints the p50 each adds over the upstream.

    .venv/bin/python scripts/bench_gateway.py [--calls 2000] [--seconds 10] [--concurrency 32]
                                              [--history-tokens 32768] [--no-ray]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPLY = json.dumps({
    "id": "cmpl-bench", "object": "chat.completion", "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}}).encode()
STREAM_REPLY = b"".join(
    b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in (
        *({"id": "cmpl-bench", "choices": [{"index": 0, "delta": {"content": f"t{i} "}}]} for i in range(8)),
        {"id": "cmpl-bench", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 8,
                                                      "total_tokens": 20}})) + b"data: [DONE]\n\n"
BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hello " * 20}],
                   "max_tokens": 8}).encode()


# -- the fake upstream -------------------------------------------------------------------------------

class Upstream(asyncio.Protocol):
    """Answers every complete request at once: /health -> 200 empty, anything else -> REPLY."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            request = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            if b'"stream":true' in request:
                body, kind = STREAM_REPLY, b"text/event-stream"
            else:
                body, kind = (b"" if head.startswith("GET /health") else REPLY), b"application/json"
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\n"  # type: ignore[attr-defined]
                                 b"content-length: %d\r\n\r\n%s" % (kind, len(body), body))


def run_upstream(port: int) -> None:
    _use_uvloop()
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(Upstream, "127.0.0.1", port, backlog=1024))
    loop.run_until_complete(server.serve_forever())


def history_bodies(tokens: int) -> tuple[bytes, bytes]:
    """(first, next): a ~`tokens`-token conversation ending with a user message, and that conversation
    extended by the upstream's reply ("ok") and one more user message: what an agent's next call sends."""
    messages = [{"role": "system", "content": "You are a coding agent. " * 40}]
    turn = 0
    while sum(len(m["content"]) for m in messages) < tokens * 4:
        messages += [{"role": "user", "content": f"observation {turn}: " + "x = f(y)\n" * 100},
                     {"role": "assistant", "content": f"step {turn}: " + "I will edit the file. " * 20}]
        turn += 1
    messages.append({"role": "user", "content": "run the tests"})
    first = {"model": "bench", "max_tokens": 8, "messages": messages}
    nxt = {**first, "messages": [*messages, {"role": "assistant", "content": "ok"},
                                 {"role": "user", "content": "next"}]}
    return json.dumps(first).encode(), json.dumps(nxt).encode()


def run_gateway(port: int, upstream: str, ttl: float = 600.0, infer: bool = True,
                ray_address: str | None = None) -> None:
    import logging

    import uvicorn

    from autellix.deploy.serve import KEEP_ALIVE_S
    from autellix.gateway import GatewayConfig, create_app
    from autellix.policy.config import PolicyConfig

    logging.getLogger("autellix.gateway").setLevel(logging.WARNING)
    policy = PolicyConfig(table_ttl=ttl)
    shared = None
    if ray_address:
        from autellix.deploy.ray_engines import init_ray
        from autellix.deploy.shared_programs import SharedPrograms

        init_ray(ray_address, namespace="autellix-bench")
        shared = SharedPrograms.connect(policy)
    app = create_app(GatewayConfig(engines=(upstream,), health_interval=1.0, infer_programs=infer,
                                   policy=policy), shared=shared)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop="uvloop" if _has("uvloop") else "asyncio",
                http="httptools" if _has("httptools") else "h11", backlog=2048,
                timeout_keep_alive=KEEP_ALIVE_S)


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def _use_uvloop() -> None:
    if _has("uvloop"):
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# -- the load generator ------------------------------------------------------------------------------

class Conn:
    """One keep-alive HTTP/1.1 connection issuing sequential POSTs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes, headers: str = "") -> tuple[int, bytes]:
        self.writer.write((f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                           f"content-length: {len(body)}\r\n{headers}\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        if b"transfer-encoding: chunked" in head.lower():  # a relayed stream
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
                parts.append((await self.reader.readexactly(size + 2))[:-2])
                if size == 0:
                    return status, b"".join(parts)
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


STREAM_BODY = BODY[:-1] + b',"stream":true}'


async def latencies(port: int, calls: int, headers: str = "", body: bytes = BODY) -> list[float]:
    conn = await Conn.open(port)
    out = []
    try:
        for i in range(calls + 50):
            t0 = time.perf_counter()
            status, _ = await conn.post("/v1/chat/completions", body, headers)
            if status != 200:
                raise RuntimeError(f"status {status}")
            if i >= 50:  # warm-up excluded
                out.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return out


async def throughput(port: int, concurrency: int, seconds: float, programs: bool,
                     body: bytes = BODY) -> tuple[int, int, list[float]]:
    deadline = time.perf_counter() + seconds
    done, failed, lats = 0, 0, []

    async def worker(i: int) -> None:
        nonlocal done, failed
        conn = await Conn.open(port)
        headers = f"x-program-id: bench-{i}\r\n" if programs else ""
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                status, _ = await conn.post("/v1/chat/completions", body, headers)
                lats.append(time.perf_counter() - t0)
                if status == 200:
                    done += 1
                else:
                    failed += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done, failed, lats


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def start_processes(ttl: float = 600.0, infer: tuple[str, ...] = ("on",),
                    ray_address: str | None = None) -> tuple[int, list[int], list[subprocess.Popen]]:
    """Start the fake upstream and one gateway process per `infer` setting (with `ray_address`: the
    last one shares its process table through Ray); returns the upstream's port, the gateways' ports
    and the processes."""
    up_port = free_port()
    me = str(Path(__file__).resolve())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, me, "--serve-upstream", str(up_port)], env=env)]
    wait_port(up_port)
    ports = []
    for i, setting in enumerate(infer):
        ports.append(free_port())
        shared = ["--ray-address", ray_address] if ray_address and i == len(infer) - 1 else []
        procs.append(subprocess.Popen([sys.executable, me, "--serve-gateway", str(ports[-1]),
                                       "--ttl", str(ttl), "--infer", setting,
                                       "--upstream-url", f"http://127.0.0.1:{up_port}", *shared], env=env))
        wait_port(ports[-1], timeout=120)
    time.sleep(1.5)  # first health probe done
    return up_port, ports, procs


def shared_state_cost(calls: int) -> list[str]:
    """A plain gateway against one sharing its table through a ProgramStore actor (module doc)."""
    import ray

    from autellix.deploy.ray_engines import LOOPBACK, pin_to_loopback

    pin_to_loopback()  # a one-machine cluster: every address on loopback
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             _node_ip_address=LOOPBACK)
    try:
        gcs = ray.get_runtime_context().gcs_address
        up_port, ports, procs = start_processes(infer=("on", "on"), ray_address=gcs)
        try:
            direct: list[float] = []
            lat: dict[str, list[float]] = {"plain": [], "shared": []}
            for _ in range(3):
                direct += asyncio.run(latencies(up_port, calls // 6))
                for name, port in zip(("plain", "shared"), ports, strict=True):
                    lat[name] += asyncio.run(latencies(port, calls // 6, "x-program-id: seq\r\n"))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=10)
    finally:
        ray.shutdown()
    d50 = statistics.median(direct)
    plain, shared = (statistics.median(lat[k]) - d50 for k in ("plain", "shared"))
    return ["shared program state (a ProgramStore Ray actor, one local Ray node), one call at a time:",
            f"  p50 overhead: single gateway {plain * 1e3:.3f} ms, replica with the shared table "
            f"{shared * 1e3:.3f} ms (+{(shared - plain) * 1e3:.3f} ms: one awaited pull, one pushed call)"]


def inference_cost(ports: dict[str, int], tokens: int, calls: int, concurrency: int,
                   seconds: float) -> list[str]:
    """Inference on against off on `tokens`-token histories, interleaved (module doc)."""
    first, nxt = history_bodies(tokens)
    for port in ports.values():  # the conversation's first call: the reply the next calls extend
        asyncio.run(latencies(port, 0, body=first))
    lat: dict[str, list[float]] = {"off": [], "on": []}
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(3):
        for setting, port in ports.items():
            lat[setting] += asyncio.run(latencies(port, calls // 6, body=nxt))
    for _ in range(5):  # the machine is shared and noisy: alternate, repeat, report the spread
        for setting, port in ports.items():
            done, failed, _ = asyncio.run(throughput(port, concurrency, seconds / 2, False, nxt))
            if failed:
                raise RuntimeError(f"{failed} calls failed with inference {setting}")
            rates[setting].append(done / (seconds / 2))
    on, off = statistics.median(lat["on"]), statistics.median(lat["off"])
    r_on, r_off = statistics.mean(rates["on"]), statistics.mean(rates["off"])
    return [
        f"program inference, {len(nxt) // 1024} KiB bodies (~{tokens} tokens of history), "
        "calls naming no program:",
        f"  1 call at a time: p50 inference off {off * 1e3:.3f} ms, on {on * 1e3:.3f} ms, "
        f"cost of inference {(on - off) * 1e3:.3f} ms (target <= 1 ms)",
        f"  {concurrency} connections: off {r_off:.0f} calls/s "
        f"({min(rates['off']):.0f}-{max(rates['off']):.0f}), on {r_on:.0f} calls/s "
        f"({min(rates['on']):.0f}-{max(rates['on']):.0f}), on/off {r_on / r_off:.2f} (target >= 0.90)"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per latency run")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the throughput run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--history-tokens", type=int, default=32768,
                        help="program inference run: tokens of history per call (0: skip it)")
    parser.add_argument("--no-ray", action="store_true", help="skip the shared program state run")
    parser.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--infer", default="on", help=argparse.SUPPRESS)
    parser.add_argument("--ray-address", help=argparse.SUPPRESS)
    parser.add_argument("--serve-gateway", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-url", help=argparse.SUPPRESS)
    parser.add_argument("--ttl", type=float, default=600.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        run_upstream(args.serve_upstream)
        return 0
    if args.serve_gateway:
        run_gateway(args.serve_gateway, args.upstream_url, args.ttl, args.infer == "on", args.ray_address)
        return 0

    _use_uvloop()
    up_port, (gw_port,), procs = start_processes()
    try:
        direct = asyncio.run(latencies(up_port, args.calls))
        through = asyncio.run(latencies(gw_port, args.calls, "x-program-id: seq\r\n"))
        s_direct = asyncio.run(latencies(up_port, args.calls // 2, body=STREAM_BODY))
        s_through = asyncio.run(latencies(gw_port, args.calls // 2, "x-program-id: seq\r\n", STREAM_BODY))
        done, failed, lats = asyncio.run(throughput(gw_port, args.concurrency, args.seconds, True))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
    d50, g50 = statistics.median(direct), statistics.median(through)
    print(f"machine: {os.cpu_count()} CPU(s), python {sys.version.split()[0]}")
    print(f"latency, 1 call at a time, {args.calls} calls:")
    print(f"  direct to upstream   p50 {d50 * 1e3:.3f} ms   p99 {pct(direct, .99) * 1e3:.3f} ms")
    print(f"  through gateway      p50 {g50 * 1e3:.3f} ms   p99 {pct(through, .99) * 1e3:.3f} ms")
    print(f"  gateway overhead     p50 {(g50 - d50) * 1e3:.3f} ms   (target <= 2 ms)")
    sd50, sg50 = statistics.median(s_direct), statistics.median(s_through)
    print(f"  streamed (8 chunks + usage, stripped): direct p50 {sd50 * 1e3:.3f} ms, through gateway "
          f"p50 {sg50 * 1e3:.3f} ms, overhead {(sg50 - sd50) * 1e3:.3f} ms")
    rate = done / args.seconds
    print(f"throughput, {args.concurrency} connections (one program each), {args.seconds:g} s:")
    print(f"  {rate:.0f} calls/s through one gateway process (target >= 500); {failed} failed; "
          f"latency p50 {pct(lats, .5) * 1e3:.2f} ms p99 {pct(lats, .99) * 1e3:.2f} ms")
    if args.history_tokens:  # fresh gateway processes, so that neither carries the runs above
        _, ports, procs = start_processes(infer=("off", "on"))
        try:
            print("\n".join(inference_cost(dict(zip(("off", "on"), ports)), args.history_tokens,
                                            args.calls, args.concurrency, args.seconds)))
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=10)
    if not args.no_ray and _has("ray"):
        print("\n".join(shared_state_cost(args.calls)))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
