"""Soak the gateway: hundreds of concurrent agent programs for N minutes against a fast fake upstream.

Each simulated program: opens a session (POST /v1/programs) or just tags calls with X-Program-ID,
makes 1-20 calls (some streamed, some as 2-4 parallel threads) with short think times, then ends its
session, except ~10% that abandon it (those must expire by TTL). A finished program is replaced at once,
so --programs stay live throughout.

Checks, printed at the end: no lost request (every call answered 200 with a complete body), gateway RSS
stable (first vs last minute), process table bounded during the run and empty after TTL once the load
stops, no call left active.

    .venv/bin/python scripts/soak_gateway.py [--minutes 10] [--programs 300] [--ttl 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_load import BODY, STREAM_BODY, start_processes  # noqa: E402


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    lost: int = 0
    programs: int = 0
    abandoned: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def fail(self, why: str) -> None:
        self.lost += 1
        self.errors[why] = self.errors.get(why, 0) + 1


async def one_call(session: aiohttp.ClientSession, url: str, headers: dict[str, str], stream: bool,
                   tally: Tally) -> None:
    tally.sent += 1
    try:
        async with session.post(url + "/v1/chat/completions", data=STREAM_BODY if stream else BODY,
                                headers={**headers, "content-type": "application/json"}) as r:
            body = await r.read()
            complete = body.endswith(b"data: [DONE]\n\n") if stream else body.endswith(b"}")
            if r.status == 200 and complete:
                tally.ok += 1
            else:
                tally.fail(f"status {r.status}" if r.status != 200 else "truncated body")
    except (TimeoutError, aiohttp.ClientError) as exc:
        tally.fail(type(exc).__name__)


async def program(session: aiohttp.ClientSession, url: str, n: int, rng: random.Random, tally: Tally) -> None:
    try:
        await _program(session, url, n, rng, tally)
    except (TimeoutError, aiohttp.ClientError) as exc:  # session calls; a lane never dies
        tally.fail(f"session {type(exc).__name__}")


async def _program(session: aiohttp.ClientSession, url: str, n: int, rng: random.Random,
                   tally: Tally) -> None:
    pid = f"soak-{n}"
    if rng.random() < 0.5:
        async with session.post(url + "/v1/programs", json={"program_id": pid}) as r:
            if r.status != 201:
                tally.fail(f"create {r.status}")
                return
    for _ in range(rng.randint(1, 20)):
        width = rng.choice((1, 1, 1, 2, 4))
        await asyncio.gather(*(one_call(session, url, {"X-Program-ID": pid, "X-Thread-ID": str(t)},
                                        rng.random() < 0.3, tally) for t in range(width)))
        await asyncio.sleep(rng.uniform(0, 0.05))  # "tool" / think time
    tally.programs += 1
    if rng.random() < 0.1:
        tally.abandoned += 1  # never ended: the TTL must reclaim it
        return
    async with session.delete(url + f"/v1/programs/{pid}") as r:
        if r.status not in (200, 404):  # 404: tagged-only program already gone is fine
            tally.fail(f"delete {r.status}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def gauge(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(url + "/metrics") as r:
        for line in (await r.text()).splitlines():
            head, _, value = line.rpartition(" ")
            if head == name:
                return float(value)
    return float("nan")


async def soak(url: str, gw_pid: int, args: argparse.Namespace) -> int:
    tally, rng, counter = Tally(), random.Random(7), iter(range(10**9))
    deadline = time.monotonic() + args.minutes * 60
    samples: list[tuple[float, float, float, float]] = []  # (t, rss MB, programs in table, calls/s)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def lane() -> None:
            while time.monotonic() < deadline:
                await program(session, url, next(counter), rng, tally)

        async def monitor() -> None:
            t0, last = time.monotonic(), 0
            while time.monotonic() < deadline:
                await asyncio.sleep(10)
                t = time.monotonic() - t0
                table = await gauge(session, url, "autellix_programs_active")
                rate = (tally.sent - last) / 10
                last = tally.sent
                samples.append((t, rss_mb(gw_pid), table, rate))
                print(f"[{t:6.0f}s] calls {tally.sent:>9} ok {tally.ok:>9} lost {tally.lost}  "
                      f"{rate:6.0f} calls/s  RSS {samples[-1][1]:6.1f} MB  table {table:5.0f} programs",
                      flush=True)

        await asyncio.gather(monitor(), *(lane() for _ in range(args.programs)))
        print(f"load stopped; waiting {args.ttl * 1.5 + 5:.0f}s for abandoned programs to expire ...",
              flush=True)
        await asyncio.sleep(args.ttl * 1.5 + 5)
        table_after = await gauge(session, url, "autellix_programs_active")
        active_after = await gauge(session, url, "autellix_calls_active")
    minute = max(1, min(6, len(samples) // 3))
    warm = samples[minute:2 * minute]
    first = statistics.median(s[1] for s in warm) if len(samples) >= 2 * minute else samples[0][1]
    last = statistics.median(s[1] for s in samples[-minute:])
    print(f"\nsoak: {args.minutes:g} min, {args.programs} concurrent programs, {tally.programs} programs "
          f"finished ({tally.abandoned} abandoned)")
    print(f"  calls sent {tally.sent}, answered ok {tally.ok}, lost {tally.lost} {tally.errors or ''}")
    print(f"  mean rate {statistics.mean(s[3] for s in samples):.0f} calls/s")
    print(f"  gateway RSS: early {first:.1f} MB -> end {last:.1f} MB ({last - first:+.1f} MB); "
          f"max {max(s[1] for s in samples):.1f} MB")
    print(f"  process table: max {max(s[2] for s in samples):.0f} programs during the run; "
          f"{table_after:.0f} after TTL; calls still active {active_after:.0f}")
    ok = tally.lost == 0 and table_after == 0 and active_after == 0 and last - first < max(20.0, 0.2 * first)
    print("  RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--programs", type=int, default=300, help="concurrent programs")
    parser.add_argument("--ttl", type=float, default=20.0, help="gateway program TTL for this run (s)")
    args = parser.parse_args()
    _, (gw_port,), procs = start_processes(ttl=args.ttl)
    try:
        return asyncio.run(soak(f"http://127.0.0.1:{gw_port}", procs[-1].pid, args))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
