"""Benchmark the policy core's per-step work over 10,000 active calls (target: <= 5 ms per step).

One engine step = charge every running call one decode token (re-leveling: demotions), advance the
wait clock (anti-starvation promotions), form the next batch (strict priority, bounded preemption) and
apply it. Prints median / p99 milliseconds per step for each policy.

    .venv/bin/python scripts/bench_policy.py [--active 10000] [--running 256] [--steps 300]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from autellix.policy import PolicyConfig, SeatBudget, make_policy
from autellix.programs import Call, ProcessTable


def setup(policy_name: str, active: int, running: int, seed: int) -> tuple:
    rng = random.Random(seed)
    policy, table = make_policy(policy_name, PolicyConfig()), ProcessTable()
    for i in range(active // 4):  # programs with a spread of attained service
        table.start(f"p{i}").service = rng.choice([0, 100, 300, 700, 1500, 3000, 6000, 20000])
    calls: list[Call] = []
    for i in range(active):
        call = table.new_call(f"p{rng.randrange(active // 4)}", thread=str(i % 3),
                              prompt_tokens=rng.randrange(50, 2000))
        call.remaining = rng.uniform(10, 5000)
        policy.add(call)
        calls.append(call)
    batch = policy.schedule([], SeatBudget(running))
    for call in batch.admitted:
        policy.on_run(call)
    return policy, list(batch.admitted)


def step(policy, running: list[Call], seats: int) -> None:
    for call in running:
        policy.charge(call, decode_tokens=1)
    policy.tick(1)
    policy.apply(policy.schedule(running, SeatBudget(seats, len(running))), running)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--active", type=int, default=10_000)
    ap.add_argument("--running", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"{args.active} active calls, {args.running} running, {args.steps} steps")
    print(f"{'policy':<10} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}  target <= 5 ms")
    for name in ("fcfs", "mlfq", "plas", "atlas", "srpt"):
        policy, running = setup(name, args.active, args.running, args.seed)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            step(policy, running, args.running)
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        p99 = times[int(0.99 * (len(times) - 1))]
        verdict = "ok" if statistics.median(times) <= 5 else "MISSED"
        print(f"{name:<10} {statistics.median(times):>10.3f} {p99:>8.3f} {times[-1]:>8.3f}  {verdict}")


if __name__ == "__main__":
    main()
