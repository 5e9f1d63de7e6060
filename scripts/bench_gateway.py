"""Gateway overhead and throughput against a fast local fake upstream (a benchmark, not a test).

Three processes (scripts/gateway_load.py): a minimal asyncio HTTP/1.1 upstream posing as an engine
(answers instantly, in each route's API shape, with usage), one gateway process (uvicorn + the Autellix
app) in front of it, and this load generator (raw keep-alive HTTP/1.1 over asyncio, to spend as little
CPU as possible).

Figures printed:
  overhead p50   = p50 latency through the gateway - p50 latency straight to the upstream, one call at a
                   time (the gateway's added latency per call);
  calls/s        = completed calls per second through the gateway at --concurrency connections.
Targets (issue 5): overhead p50 <= 2 ms, >= 500 calls/s on a 2-core machine.

Program inference (--history-tokens N, default 32768; 0 skips it), on each route that infers programs
(/v1/chat/completions, /v1/messages, /v1/responses, each call in its API's own request shape:
autellix.bench.api_shapes): calls that name no program, in chains of --chain-turns calls (default 20),
each call a history of ~N tokens (~4 characters each, ~100 messages) extending the previous call's reply,
sent to two gateway processes side by side, one inferring programs from the conversation and one with
it off; blocks of calls alternate between them and between routes. Prints per route the p50 latency of
each (and their difference: the cost of inference), the calls/s of each at --concurrency connections,
and the route's calls/s with inference on over chat's. Targets (issue 16, and the Messages / Responses
issue): p50 overhead with inference on <= 1 ms more than off; throughput within 10% of off, and of chat's.

Shared program state (issue 18; needs Ray, `--no-ray` skips it): a gateway replica whose process
table is shared through a ProgramStore actor (as under `autellix serve --ray`) against a plain gateway,
one call at a time on one program, blocks alternating; prints the p50 each adds over the upstream.

    .venv/bin/python scripts/bench_gateway.py [--calls 2000] [--seconds 10] [--concurrency 32]
                                              [--history-tokens 32768] [--chain-turns 20] [--no-ray]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_load import (  # noqa: E402
    OK,
    STREAM_BODY,
    has,
    latencies,
    pct,
    start_processes,
    stop_processes,
    throughput,
    use_uvloop,
)

from autellix.bench.api_shapes import APIS, PATHS, conversation, request_body  # noqa: E402


def history_messages(tokens: int) -> list[dict[str, Any]]:
    """A ~`tokens`-token chat conversation of a coding agent, ending with its assistant message."""
    messages = [{"role": "system", "content": "You are a coding agent. " * 40}]
    turn = 0
    while sum(len(m["content"]) for m in messages) < tokens * 4:
        messages += [{"role": "user", "content": f"observation {turn}: " + "x = f(y)\n" * 100},
                     {"role": "assistant", "content": f"step {turn}: " + "I will edit the file. " * 20}]
        turn += 1
    return messages


def _items(api: str, messages: list[dict[str, Any]]) -> bytes:
    """`messages` in `api`'s shape, serialised as list elements, each after a comma."""
    return b"".join(b"," + json.dumps(item).encode() for item in conversation(api, messages))


class Chains:
    """Request bodies of inference chains over one API: chains of `turns` calls; call k of a chain is the
    ~`tokens`-token history, a user message naming the chain (no two chains are one conversation), then
    k times the upstream's reply OK and a user message: it extends call k-1's reply, as an agent loop
    does. Bodies are spliced from items serialised once, so that the load generator spends little of
    the CPU the gateway is measured with."""

    def __init__(self, api: str, tokens: int, turns: int) -> None:
        self.api, self.turns = api, turns
        body = request_body(api, history_messages(tokens), model="bench", max_tokens=8)
        key = "input" if api == "responses" else "messages"
        self.history = b",".join(json.dumps(item).encode() for item in body[key])
        before, after = json.dumps({**body, key: "\0"}).encode().split(b'"\\u0000"')
        self.before, self.after = before + b"[", b"]" + after
        turn_items = [_items(api, [OK, {"role": "user", "content": f"next {k}"}]) for k in range(turns)]
        self.tails = [b"".join(turn_items[:k]) for k in range(turns)]
        self.serial = itertools.count()
        self.current: dict[int, bytes] = {}
        """connection -> the marker item of the chain it is on."""

    def body(self, conn: int, i: int) -> bytes:
        """Call `i` on connection `conn`: each connection runs chains one after another."""
        k = i % self.turns
        if k == 0:
            chain = next(self.serial)
            self.current[conn] = _items(self.api, [{"role": "user", "content": f"run the tests ({chain})"}])
        return self.before + self.history + self.current[conn] + self.tails[k] + self.after


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
            stop_processes(procs)
    finally:
        ray.shutdown()
    d50 = statistics.median(direct)
    plain, shared = (statistics.median(lat[k]) - d50 for k in ("plain", "shared"))
    return ["shared program state (a ProgramStore Ray actor, one local Ray node), one call at a time:",
            f"  p50 overhead: single gateway {plain * 1e3:.3f} ms, replica with the shared table "
            f"{shared * 1e3:.3f} ms (+{(shared - plain) * 1e3:.3f} ms: one awaited pull, one pushed call)"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def inference_cost(gateways: dict[str, tuple[int, int]], tokens: int, turns: int, calls: int,
                   concurrency: int, seconds: float) -> list[str]:
    """Inference on against off, per route, on chains over `tokens`-token histories (module doc);
    `gateways`: inference setting -> (port, pid). Besides calls/s, the gateway's CPU time per call in
    the throughput runs: on a shared machine wall-clock rates swing with other load, CPU time much less."""
    chains = {api: Chains(api, tokens, turns) for api in APIS}
    runs = [(api, s) for api in APIS for s in gateways]
    lat: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    rates: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    cpu: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for api, setting in runs:  # warm-up: one chain each
        asyncio.run(latencies(gateways[setting][0], 0, body=chains[api].body, path=PATHS[api], warmup=turns))
    for _ in range(max(3, calls // (3 * turns))):  # one chain per block: noise bursts hit every run alike
        for api, setting in runs:
            lat[api, setting] += asyncio.run(latencies(gateways[setting][0], turns, body=chains[api].body,
                                                       path=PATHS[api], warmup=0))
    for _ in range(5):  # the machine is shared and noisy: alternate, repeat, report the spread
        for api, setting in runs:
            port, pid = gateways[setting]
            used = cpu_seconds(pid)
            done, failed, _ = asyncio.run(throughput(port, concurrency, seconds / 2, False,
                                                     chains[api].body, PATHS[api]))
            if failed:
                raise RuntimeError(f"{failed} {api} calls failed with inference {setting}")
            rates[api, setting].append(done / (seconds / 2))
            cpu[api, setting].append((cpu_seconds(pid) - used) / max(done, 1))
    mean = {run: statistics.mean(rates[run]) for run in runs}
    cpu_ms = {run: statistics.median(cpu[run]) * 1e3 for run in runs}
    lines = [f"program inference, calls naming no program in chains of {turns} on ~{tokens}-token histories "
             f"(p50: one call at a time; calls/s: {concurrency} connections, mean (range) of 5 runs; gateway "
             "CPU ms per call in those runs, median):",
             f"  {'route':<21} {'KiB':>4} {'p50 off':>8} {'p50 on':>8} {'cost':>7} {'calls/s off':>11} "
             f"{'calls/s on':>17} {'on/off':>6} {'/chat':>5} {'CPU off':>7} {'CPU on':>6} {'/chat':>5}"]
    for api in APIS:
        off, on = (statistics.median(lat[api, s]) * 1e3 for s in ("off", "on"))
        size = len(chains[api].body(0, turns - 1)) // 1024
        span = f"{min(rates[api, 'on']):.0f}-{max(rates[api, 'on']):.0f}"
        on_off, over_chat = mean[api, "on"] / mean[api, "off"], mean[api, "on"] / mean["chat", "on"]
        lines.append(f"  {PATHS[api]:<21} {size:>4} {off:>6.3f}ms {on:>6.3f}ms {on - off:>5.3f}ms "
                     f"{mean[api, 'off']:>11.0f} {mean[api, 'on']:>5.0f} ({span:>9}) "
                     f"{on_off:>6.2f} {over_chat:>5.2f} "
                     f"{cpu_ms[api, 'off']:>7.3f} {cpu_ms[api, 'on']:>6.3f} "
                     f"{cpu_ms['chat', 'on'] / cpu_ms[api, 'on']:>5.2f}")
    lines.append("  targets: cost <= 1 ms; calls/s on/off >= 0.90; on, over chat's >= 0.90 (calls/s; CPU: "
                 "chat's CPU per call over the route's)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per latency run")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the throughput run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--history-tokens", type=int, default=32768,
                        help="program inference run: tokens of history per call (0: skip it)")
    parser.add_argument("--chain-turns", type=int, default=20,
                        help="program inference run: calls per chain (each extends the previous reply)")
    parser.add_argument("--no-ray", action="store_true", help="skip the shared program state run")
    args = parser.parse_args()
    use_uvloop()
    up_port, (gw_port,), procs = start_processes()
    try:
        direct = asyncio.run(latencies(up_port, args.calls))
        through = asyncio.run(latencies(gw_port, args.calls, "x-program-id: seq\r\n"))
        s_direct = asyncio.run(latencies(up_port, args.calls // 2, body=STREAM_BODY))
        s_through = asyncio.run(latencies(gw_port, args.calls // 2, "x-program-id: seq\r\n", STREAM_BODY))
        done, failed, lats = asyncio.run(throughput(gw_port, args.concurrency, args.seconds, True))
    finally:
        stop_processes(procs)
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
        gateways = {s: (port, p.pid) for s, port, p in zip(("off", "on"), ports, procs[1:], strict=True)}
        try:
            print("\n".join(inference_cost(gateways, args.history_tokens, args.chain_turns, args.calls,
                                            args.concurrency, args.seconds)))
        finally:
            stop_processes(procs)
    if not args.no_ray and has("ray"):
        print("\n".join(shared_state_cost(args.calls)))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
