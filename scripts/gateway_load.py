"""The parts scripts/bench_gateway.py and scripts/soak_gateway.py drive: a FAKE upstream posing as an
engine (a minimal asyncio HTTP/1.1 server that answers at once), gateway processes (uvicorn + the Autellix
app) in front of it, and a load generator (raw keep-alive HTTP/1.1 over asyncio, to spend as little CPU
as possible on the client side).

The upstream answers each route in its API's shape (autellix.bench.api_shapes), always with the reply
OK ("ok"): /v1/chat/completions a chat completion (streamed: 8 chunks + usage when the body asks for a
stream), /v1/messages an Anthropic message, /v1/responses a response object; /health 200 empty. A
client that sends OK back in its API's shape extends the call it answered (program inference links
them).

Run as a script it is one of those processes (`--serve-upstream PORT`, `--serve-gateway PORT`):
start_processes starts them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from autellix.bench.api_shapes import PATHS, answer

OK = {"role": "assistant", "content": "ok"}
REPLY = json.dumps(answer("chat", OK, 12, 8, "cmpl-bench")).encode()
ANSWERS = {PATHS[api].encode(): json.dumps(answer(api, OK, 12, 8, "bench")).encode()
           for api in ("messages", "responses")}
"""Complete answers by request path; any other path gets REPLY."""
STREAM_REPLY = b"".join(
    b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in (
        *({"id": "cmpl-bench", "choices": [{"index": 0, "delta": {"content": f"t{i} "}}]} for i in range(8)),
        {"id": "cmpl-bench", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 8,
                                                      "total_tokens": 20}})) + b"data: [DONE]\n\n"
BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hello " * 20}],
                   "max_tokens": 8}).encode()
STREAM_BODY = BODY[:-1] + b',"stream":true}'
CHAT = PATHS["chat"]

Body = bytes | Callable[[int, int], bytes]
"""A request body, or one per call: (connection, call on that connection) -> body."""


# -- the fake upstream -------------------------------------------------------------------------------

class Upstream(asyncio.Protocol):
    """Answers every complete request at once (module doc)."""

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
            path = self.buffer[:end].split(b" ", 2)[1]
            self.buffer = self.buffer[end + 4 + length:]
            if b'"stream":true' in request:
                body, kind = STREAM_REPLY, b"text/event-stream"
            else:
                body = b"" if head.startswith("GET /health") else ANSWERS.get(path, REPLY)
                kind = b"application/json"
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\n"  # type: ignore[attr-defined]
                                 b"content-length: %d\r\n\r\n%s" % (kind, len(body), body))


def run_upstream(port: int) -> None:
    use_uvloop()
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(Upstream, "127.0.0.1", port, backlog=1024))
    loop.run_until_complete(server.serve_forever())


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
                loop="uvloop" if has("uvloop") else "asyncio",
                http="httptools" if has("httptools") else "h11", backlog=2048,
                timeout_keep_alive=KEEP_ALIVE_S)


def has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def use_uvloop() -> None:
    if has("uvloop"):
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


def _body(body: Body, conn: int, i: int) -> bytes:
    return body if isinstance(body, bytes) else body(conn, i)


async def latencies(port: int, calls: int, headers: str = "", body: Body = BODY, path: str = CHAT,
                    warmup: int = 50) -> list[float]:
    """Seconds per call, one call at a time, after `warmup` calls (not counted) on a new connection."""
    conn = await Conn.open(port)
    out = []
    try:
        for i in range(calls + warmup):
            data = _body(body, 0, i)
            t0 = time.perf_counter()
            status, _ = await conn.post(path, data, headers)
            if status != 200:
                raise RuntimeError(f"status {status}")
            if i >= warmup:
                out.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return out


async def throughput(port: int, concurrency: int, seconds: float, programs: bool, body: Body = BODY,
                     path: str = CHAT) -> tuple[int, int, list[float]]:
    """(calls done, calls failed, latencies) of `concurrency` connections calling for `seconds`; with
    `programs`, each connection names its own program."""
    deadline = time.perf_counter() + seconds
    done, failed, lats = 0, 0, []

    async def worker(c: int) -> None:
        nonlocal done, failed
        conn = await Conn.open(port)
        headers = f"x-program-id: bench-{c}\r\n" if programs else ""
        i = 0
        try:
            while time.perf_counter() < deadline:
                data = _body(body, c, i)
                i += 1
                t0 = time.perf_counter()
                status, _ = await conn.post(path, data, headers)
                lats.append(time.perf_counter() - t0)
                if status == 200:
                    done += 1
                else:
                    failed += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker(c) for c in range(concurrency)))
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


def stop_processes(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve-upstream", type=int)
    parser.add_argument("--serve-gateway", type=int)
    parser.add_argument("--upstream-url")
    parser.add_argument("--infer", default="on")
    parser.add_argument("--ray-address")
    parser.add_argument("--ttl", type=float, default=600.0)
    args = parser.parse_args()
    if args.serve_upstream:
        run_upstream(args.serve_upstream)
    elif args.serve_gateway:
        run_gateway(args.serve_gateway, args.upstream_url, args.ttl, args.infer == "on", args.ray_address)
    else:
        parser.error("give --serve-upstream or --serve-gateway")
    return 0


if __name__ == "__main__":
    sys.exit(main())
