"""Chaos soak (not in CI): closed-loop agent traffic over two gateway replica processes in front of two
real engines on Ray, while SIGKILLs land at random on an engine, a replica process and the store actor.

Deployment (all on loopback): a one-machine Ray cluster this script owns (`ray.cluster_utils`, pinned
to 127.0.0.1), replica A = `autellix serve --ray ADDR --engines 2` (starts the engine actors), replica
B = `autellix serve --ray ADDR --engines 0`. Traffic, like soak_gateway.py: --agents closed-loop lanes,
each running programs of 2-6 chat turns (half name their program with X-Program-ID, half name nothing:
inferred from the conversation), every call through a replica picked at random (a client-side load
balancer: a refused connection goes to the other replica, as an LB would), with a GET /v1/models and a
read of the program's entry after each call. Every --every seconds (once all is back up) one part is
SIGKILLed, the three in a random order, again and again: an engine's API server (Ray restarts the
engine), replica B (restarted after 3 s, as a supervisor would) or the store actor's worker (Ray
restarts it).

Printed, from the clients' side: calls sent; answered; failed (error status or connection error) while
the part serving them died; lost (failed any other way, never answered within --timeout, or answered
wrongly: must be 0); program reads that went backwards or lost a program (0); calls short in a
program's final entry (0); inferred agents split into several programs; engine start-up and restart
times; replica A's RSS growth after warm-up (< 10%); /dev/shm files left after shutdown (0).

    flock /work/heavy.lock .venv/bin/python scripts/chaos.py --minutes 10 [--agents 6] [--every 45]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_parts import Deployment  # noqa: E402
from chaos_tally import Tally, rss_mb  # noqa: E402


async def agent(lane: int, dep: Deployment, tally: Tally, rng: random.Random, deadline: float,
                session: aiohttp.ClientSession) -> None:
    n = 0
    while time.monotonic() < deadline:
        n += 1
        named = f"chaos-{lane}-{n}" if rng.random() < 0.5 else None
        history = [{"role": "system", "content": f"You are agent {lane}."}]
        seen: set[str] = set()
        for turn in range(rng.randint(2, 6)):
            history.append({"role": "user", "content": f"Task {n}, step {turn}: count to {turn + 3}."})
            reply, program = await dep.call(session, tally, history, named)
            if reply is None:
                break  # the conversation cannot go on without its reply: a new program
            history.append(reply)
            if program:
                seen.add(program)
                await dep.read_entry(session, tally, program)
            await dep.list_models(session, tally)
        if named is None and len(seen) > 1:
            tally.split_agents += 1
        tally.programs += 1


async def chaos(dep: Deployment, tally: Tally, rng: random.Random, deadline: float, every: float) -> None:
    targets: list[str] = []
    while time.monotonic() + every < deadline:
        await asyncio.sleep(every * rng.uniform(0.7, 1.3))
        await dep.all_up(600)
        targets = targets or rng.sample(["engine", "replica", "store"], 3)  # each part, in random order
        target = targets.pop()
        await asyncio.to_thread(dep.kill, target, rng)
        await dep.all_up(600)


async def monitor(dep: Deployment, tally: Tally, deadline: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(15)
        dep.rss.append(rss_mb(dep.replicas[0].proc.pid))
        print(f"[{time.monotonic() - t0:5.0f}s] sent {tally.sent} answered {tally.answered} "
              f"failed-while-dying {tally.dying} lost {tally.lost} backwards {tally.backwards} "
              f"kills {dict(dep.kills)} RSS(A) {dep.rss[-1]:.1f} MB", flush=True)


async def soak(dep: Deployment, args: argparse.Namespace) -> Tally:
    tally, rng = Tally(), random.Random(args.seed)
    deadline = time.monotonic() + args.minutes * 60
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(monitor(dep, tally, deadline), chaos(dep, tally, rng, deadline, args.every),
                             *(agent(i, dep, tally, random.Random(args.seed * 1000 + i), deadline, session)
                               for i in range(args.agents)))
        await dep.all_up(600)
        await asyncio.sleep(2)  # the last pushes reach the store
        await dep.final_check(session, tally)
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--agents", type=int, default=6, help="closed-loop agent lanes")
    parser.add_argument("--every", type=float, default=45.0, help="mean seconds between kills")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds before a call counts as lost")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    dep = Deployment(args.max_tokens)
    try:
        dep.start()
        tally = asyncio.run(soak(dep, args))
    finally:
        dep.stop()
    return tally.report(dep, args)


if __name__ == "__main__":
    sys.exit(main())
