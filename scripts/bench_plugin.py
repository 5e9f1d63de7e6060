"""Extra time the AutellixScheduler plugin adds to each vLLM scheduler step (target: <= 1 ms with KV
residency on, at 256 running and 2,000 waiting calls on the development machine).

Builds vLLM's real V1 Scheduler twice with the same state (no model: autellix.engine.fake), fills it to
256 running + 2,000 waiting calls of 400 programs, then times `schedule()` and `update_from_output()`
per step for the stock scheduler and for the plugin, and prints the plugin's extra time per step,
measured on the same state (the plugin's total minus the time spent inside vLLM's own methods, which it
calls through super()). Two states: `steady` (waiting calls are no better than running ones: no
preemption, the plugin's bookkeeping alone) and `churn` (waiting calls of fresh programs outrank running
ones: the plugin also preempts up to max_preemptions per step, and vLLM then recomputes) and `gated` (as
steady, with the program gate in force, as when holds fail: the waiting calls' programs are not resident,
so their calls wait parked; KV holds are on in every state).

    python scripts/bench_plugin.py [--steps 300] [--policy autellix]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from autellix.engine.fake import Runner, ctx, make_request, make_scheduler  # noqa: E402

RUNNING, WAITING, PROGRAMS = 256, 2000, 400


def build(policy: str | None, state: str, seed: int = 0) -> Runner:
    rng = random.Random(seed)
    # gated: the running calls' working sets (512 blocks) pass the gate's high-water mark (1% of 40,000)
    gate = {"admit_high": 0.01, "admit_low": 0.005} if state == "gated" and policy is not None else {}
    sched = make_scheduler(policy, max_num_seqs=RUNNING, num_blocks=40_000, max_tokens_per_step=8192,
                           max_model_len=4096, **gate)
    run = Runner(sched)
    # steady: running programs have little service, waiting ones much (levels 1-7): nothing to preempt.
    # churn: running programs have some service (levels 1-3), waiting ones none (level 0).
    for i in range(RUNNING):
        service = rng.uniform(0, 200) if state == "steady" else rng.uniform(300, 2000)
        run.add(make_request(ctx(f"p{i % PROGRAMS}", service=service), prompt_tokens=32, max_tokens=3000))
    while len(sched.running) < RUNNING:
        run.step()
    if state == "gated" and policy is not None:
        sched.holds.gate.missed = 1.0  # the thrash signal, as if returning programs had missed their history
    for i in range(WAITING):
        service = 0.0 if state == "churn" else rng.uniform(300, 20_000)
        run.add(make_request(ctx(f"q{i % PROGRAMS}", service=service, thread=str(i % 3)),
                             prompt_tokens=32, max_tokens=3000))
    run.step()
    return run


class _Inner:
    """Times vLLM's own Scheduler.schedule / update_from_output when the plugin calls them via super()."""

    def __init__(self) -> None:
        from vllm.v1.core.sched.scheduler import Scheduler

        self.cls, self.seconds = Scheduler, 0.0
        self.orig = (Scheduler.schedule, Scheduler.update_from_output)

    def _wrap(self, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t0
        return timed

    def __enter__(self):
        self.cls.schedule, self.cls.update_from_output = (self._wrap(f) for f in self.orig)
        return self

    def __exit__(self, *exc):
        self.cls.schedule, self.cls.update_from_output = self.orig


def timed_steps(run: Runner, steps: int) -> tuple[list[float], list[float]]:
    """Per step: total seconds in schedule() + update_from_output(), and the part spent inside vLLM's
    own methods (so total - inner = the plugin's extra time, measured on one and the same state)."""
    from autellix.engine.compat import model_runner_output

    sched, totals, inners = run.sched, [], []
    with _Inner() as inner:
        for _ in range(steps):
            inner.seconds = 0.0
            t0 = time.perf_counter()
            out = sched.schedule()
            t1 = time.perf_counter()
            ids = list(out.num_scheduled_tokens)
            sampled = [[100] if sched.requests[r].num_computed_tokens >= sched.requests[r].num_tokens
                       else [] for r in ids]
            mro = model_runner_output(ids, sampled)
            t2 = time.perf_counter()
            sched.update_from_output(out, mro)
            t3 = time.perf_counter()
            totals.append((t1 - t0) + (t3 - t2))
            inners.append(inner.seconds)
    return totals, inners


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--policy", default="autellix")
    args = ap.parse_args()
    print(f"{RUNNING} running + {WAITING} waiting calls, {PROGRAMS} programs, policy={args.policy}, "
          f"{args.steps} steps; ms per step (schedule + update_from_output)")
    print(f"{'state':<7} {'stock vLLM':>10} {'plugin':>8} {'of it vLLM':>10} "
          f"{'extra med':>9} {'mean':>6} {'p99':>6} {'preempted':>9}")
    worst = 0.0
    for state in ("steady", "churn", "gated"):
        stock, plugin = build(None, state), build(args.policy, state)
        gc.collect()
        stock_total, _ = timed_steps(stock, args.steps)
        total, inner = timed_steps(plugin, args.steps)
        extra = sorted((a - b) * 1e3 for a, b in zip(total, inner))
        med = statistics.median(extra)
        worst = max(worst, med)
        print(f"{state:<7} {statistics.median(stock_total) * 1e3:>10.3f} "
              f"{statistics.median(total) * 1e3:>8.3f} "
              f"{statistics.median(inner) * 1e3:>10.3f} {med:>9.3f} {statistics.fmean(extra):>6.3f} "
              f"{extra[int(0.99 * (len(extra) - 1))]:>6.3f} {plugin.sched.autellix_stats['preemptions']:>9}"
              + (f"  ({plugin.sched.waiting.num_parked()} calls parked)" if state == "gated" else ""))
    print(f"plugin extra time per schedule step: {worst:.3f} ms (median, worst state) -> "
          f"{'OK (<= 1 ms)' if worst <= 1.0 else 'OVER the 1 ms target'}")


if __name__ == "__main__":
    main()
