"""Replay agent programs against one endpoint: at one arrival rate (`replay`, open loop) or with N programs
in flight (`replay_closed`, closed loop): the real-engine counterparts of a simulator sweep point and of a
simulated fleet point.

Open loop: programs start at their (Poisson) arrival times. Closed loop: N start at once and the next
starts when one ends, until `stop_after` have completed (the programs still running then are cut off);
a program's arrival is when it started, and every program that ends gets a program-end notice
(autellix.context.end_notice), so an engine running the Autellix scheduler releases its KV at once (a
stock engine runs the notice as a one-token call, the same load for every target).

Inside a program every call is a task that waits for its dependencies, sleeps its tool pause, builds its
prompt (history of its prefix call + real text sized to the call's token count) and streams the
completion. Calls of different threads therefore run
concurrently and calls of one thread in order, exactly as the workload's DAG says.

Invariants:
- A call is issued only after every call in `depends_on` finished successfully; if one failed, the call
  is recorded as skipped and its program as failed (its latency would be meaningless).
- Program ids sent to the engine carry the run's tag, so an engine's process table never mixes the same
  workload program across rate points or targets (no stale service carried over).
- Call records are kept as the calls finish, so a cut-off program's finished calls count.
- Failures never raise out of `replay`: they are recorded per call; after `abort_after` consecutive
  failed calls the rest of the run is skipped (a dead target costs seconds, not the arrival schedule).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from autellix.bench.client import completion_body, identity_headers, stream_completion
from autellix.bench.prompts import PromptBuilder
from autellix.bench.records import CallRecord, ProgramRecord
from autellix.bench.targets import Target
from autellix.context import end_notice
from autellix.workloads.spec import CallSpec, ProgramSpec


@dataclass(frozen=True)
class ReplayOptions:
    """How to talk to the target. `max_model_len`: clip calls that would overflow the context (the same
    for every target of a run, so clipping never favours one)."""

    model: str
    run_tag: str
    timeout: float = 600.0
    max_model_len: int | None = None
    cache_salt: str | None = None
    salt_per_program: bool = False
    """Each program gets its own salt (`cache_salt` + program id): no KV shared across programs."""
    send_identity: bool = True
    abort_after: int = 20


@dataclass
class RunResult:
    """Everything one (target, rate) replay produced. Times are seconds from the run's start."""

    target: str
    rate: float
    concurrency: int = 0
    """Programs in flight for a closed-loop run (0: open loop at `rate`)."""
    programs: list[ProgramRecord] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    wall_s: float = 0.0
    aborted: str | None = None


def clip_call(prompt: int, output: int, max_model_len: int | None) -> tuple[int, int, bool]:
    """(prompt, output, clipped) so that prompt + output fits the context with a small margin."""
    if max_model_len is None or prompt + output <= max_model_len - 8:
        return prompt, output, False
    out = min(output, max_model_len // 2)
    return max(1, min(prompt, max_model_len - out - 8)), out, True


class _Run:
    """State shared by the programs of one replay (failure streak, abort flag, results)."""

    def __init__(self, client: httpx.AsyncClient, target: Target, builder: PromptBuilder,
                 opts: ReplayOptions, result: RunResult, t0: float) -> None:
        self.client, self.target, self.builder, self.opts = client, target, builder, opts
        self.result, self.t0 = result, t0
        self.streak = 0
        self.abort = asyncio.Event()

    def note(self, ok: bool, error: str | None) -> None:
        self.streak = 0 if ok else self.streak + 1
        if self.streak >= self.opts.abort_after and not self.abort.is_set():
            self.result.aborted = f"{self.streak} calls failed in a row (last: {error})"
            self.abort.set()

    async def call(self, spec: ProgramSpec, i: int, history: str, wire_id: str) -> tuple[CallRecord, str]:
        """Issue call i; return its record and the new history (prompt + output) for later calls."""
        c: CallSpec = spec.calls[i]
        prompt_n, out_n, clipped = clip_call(c.prompt_tokens, c.output_tokens, self.opts.max_model_len)
        # Tokenizing long prompts takes milliseconds: off the event loop, so stream timings stay honest.
        text, sent_n = await asyncio.to_thread(self.builder.build, history, prompt_n, c.prompt_text,
                                               f"{spec.program_id}/{i}")
        thread = str(c.thread)
        program = wire_id if self.opts.send_identity else None
        salt = self.opts.cache_salt
        if salt and self.opts.salt_per_program:
            salt = f"{salt}:{spec.program_id}"
        body = completion_body(self.opts.model, text, out_n, program, thread, salt)
        o = await stream_completion(self.client, self.target.completions_url, body,
                                    identity_headers(program, thread), self.opts.timeout)
        rec = CallRecord(
            target=self.target.name, rate=self.result.rate, program=spec.program_id, thread=c.thread,
            call=i, role=c.role, prompt_tokens=prompt_n, output_tokens=out_n, sent_prompt_tokens=sent_n,
            engine_prompt_tokens=o.engine_prompt_tokens, completion_tokens=o.completion_tokens,
            issued=o.sent - self.t0, ttft=None if o.first_token is None else o.first_token - o.sent,
            latency=None if o.finished is None else o.finished - o.sent, clipped=clipped, error=o.error,
            cached_tokens=o.cached_tokens)
        self.result.calls.append(rec)
        self.note(o.error is None, o.error)
        return rec, text + o.text

    async def program(self, spec: ProgramSpec) -> ProgramRecord:
        n = len(spec.calls)
        done = [asyncio.Event() for _ in range(n)]
        ok = [False] * n
        history = [""] * n
        records: list[CallRecord | None] = [None] * n
        wire_id = f"{self.opts.run_tag}:{spec.program_id}"

        async def run(i: int) -> None:
            c = spec.calls[i]
            try:
                for d in c.depends_on:
                    await done[d].wait()
                if not all(ok[d] for d in c.depends_on) or self.abort.is_set():
                    return  # skipped: a dependency failed or the run was aborted
                if c.tool_pause > 0:
                    await asyncio.sleep(c.tool_pause)
                prefix = history[c.prefix_call] if c.prefix_call is not None else ""
                records[i], history[i] = await self.call(spec, i, prefix, wire_id)
                ok[i] = records[i].error is None
            finally:
                done[i].set()

        await asyncio.gather(*(run(i) for i in range(n)))
        done_recs = [r for r in records if r is not None]
        errors = [r.error for r in done_recs if r.error]
        finished = [r.issued + r.latency for r in done_recs if r.latency is not None]
        all_ok = all(ok)
        error = errors[0] if errors else (None if all_ok else "aborted")
        return ProgramRecord(
            target=self.target.name, rate=self.result.rate, program=spec.program_id, kind=spec.kind,
            threads=spec.num_threads, calls=n, arrival=spec.arrival,
            finish=max(finished) if finished and all_ok else None,
            output_tokens=sum(r.completion_tokens for r in done_recs), error=error)

    async def end(self, spec: ProgramSpec) -> None:
        """Tell the engine the program ended (best effort: a failed notice only costs the engine a hold)."""
        if not self.opts.send_identity:
            return
        body = {"model": self.opts.model, **end_notice(f"{self.opts.run_tag}:{spec.program_id}")}
        with contextlib.suppress(Exception):
            await self.client.post(self.target.completions_url, json=body, timeout=30)


async def replay(client: httpx.AsyncClient, target: Target, programs: Sequence[ProgramSpec], rate: float,
                 builder: PromptBuilder, opts: ReplayOptions,
                 on_program_done: Callable[[ProgramRecord], None] | None = None) -> RunResult:
    """Replay `programs` (arrival times already drawn at `rate`) against `target`; never raises for
    endpoint failures."""
    result = RunResult(target=target.name, rate=rate)
    t0 = time.perf_counter()
    run = _Run(client, target, builder, opts, result, t0)

    async def one(spec: ProgramSpec) -> None:
        rec = await run.program(spec)
        result.programs.append(rec)
        if on_program_done:
            on_program_done(rec)

    tasks: list[asyncio.Task[None]] = []
    for spec in sorted(programs, key=lambda p: p.arrival):
        delay = t0 + spec.arrival - time.perf_counter()
        if delay > 0 and not run.abort.is_set():
            try:
                await asyncio.wait_for(run.abort.wait(), delay)
            except TimeoutError:
                pass
        tasks.append(asyncio.create_task(one(spec)))  # after an abort it returns at once as failed
    await asyncio.gather(*tasks)
    result.wall_s = time.perf_counter() - t0
    result.programs.sort(key=lambda r: r.arrival)
    result.calls.sort(key=lambda r: (r.issued, r.program, r.call))
    return result


async def replay_closed(client: httpx.AsyncClient, target: Target, programs: Sequence[ProgramSpec],
                        concurrency: int, stop_after: int, builder: PromptBuilder, opts: ReplayOptions,
                        on_program_done: Callable[[ProgramRecord], None] | None = None) -> RunResult:
    """Keep `concurrency` of `programs` in flight, in order, until `stop_after` completed (module
    docstring); never raises for endpoint failures."""
    result = RunResult(target=target.name, rate=0.0, concurrency=concurrency)
    t0 = time.perf_counter()
    run = _Run(client, target, builder, opts, result, t0)
    todo = iter(programs)
    enough = asyncio.Event()

    async def fleet_slot() -> None:
        for spec in todo:  # one shared iterator: each slot takes the next program when its own ends
            if enough.is_set() or run.abort.is_set():
                return
            rec = await run.program(dataclasses.replace(spec, arrival=time.perf_counter() - t0))
            result.programs.append(rec)
            await run.end(spec)
            if on_program_done:
                on_program_done(rec)
            if sum(p.ok for p in result.programs) >= stop_after:
                enough.set()

    slots = [asyncio.create_task(fleet_slot()) for _ in range(concurrency)]
    waiters = [asyncio.create_task(w) for w in (asyncio.wait(slots), enough.wait(), run.abort.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for task in (*slots, *waiters):
        task.cancel()  # cut-off programs: their open streams close, so the engine aborts their calls
    await asyncio.gather(*slots, *waiters, return_exceptions=True)
    result.wall_s = time.perf_counter() - t0
    result.programs.sort(key=lambda r: r.arrival)
    result.calls.sort(key=lambda r: (r.issued, r.program, r.call))
    return result
