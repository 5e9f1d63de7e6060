"""Replay agent programs against one endpoint: at one arrival rate (`replay`, open loop), with N programs
in flight (`replay_closed`, closed loop), or both (`replay_mixed`): the real-engine counterparts of a
simulator sweep point, of a simulated fleet point and of a simulated mixed point.

Open loop: programs start at their (Poisson) arrival times. Closed loop: N start at once and the next
starts when one ends, until `stop_after` have completed (the programs still running then are cut off);
a program's arrival is when it started, and every program that ends gets a program-end notice
(autellix.context.end_notice), so an engine running the Autellix scheduler releases its KV at once (a
stock engine runs the notice as a one-token call, the same load for every target). Mixed (as
autellix.sim.cluster): the closed-loop fleet is batch (its calls say so: bench/client.py); once N of its
programs have ended (it has turned over once) an open-loop stream of interactive programs starts, at
their arrival times counted from then; the run ends when the last of those ends (the fleet is cut off
then), and fails (FleetRanDry) if the fleet had no program left to start before that.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import httpx

from autellix.bench.client import call_headers, completion_body, stream_completion
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


class FleetRanDry(RuntimeError):
    """A mixed run's batch fleet had no program left to start before its interactive stream ended."""


ProgramDone = Callable[[ProgramRecord], None]


class _Run:
    """State shared by the programs of one replay (failure streak, abort flag, results)."""

    def __init__(self, client: httpx.AsyncClient, target: Target, builder: PromptBuilder,
                 opts: ReplayOptions, result: RunResult, on_done: ProgramDone | None = None) -> None:
        self.client, self.target, self.builder, self.opts = client, target, builder, opts
        self.result, self.on_done = result, on_done
        self.t0 = time.perf_counter()
        self.streak = 0
        self.abort = asyncio.Event()

    def note(self, ok: bool, error: str | None) -> None:
        self.streak = 0 if ok else self.streak + 1
        if self.streak >= self.opts.abort_after and not self.abort.is_set():
            self.result.aborted = f"{self.streak} calls failed in a row (last: {error})"
            self.abort.set()

    async def call(self, spec: ProgramSpec, i: int, history: str, wire_id: str,
                   batch: bool) -> tuple[CallRecord, str]:
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
        body = completion_body(self.opts.model, text, out_n, program, thread, salt, batch)
        o = await stream_completion(self.client, self.target.completions_url, body,
                                    call_headers(program, thread, batch), self.opts.timeout)
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

    async def program(self, spec: ProgramSpec, batch: bool = False) -> ProgramRecord:
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
                records[i], history[i] = await self.call(spec, i, prefix, wire_id, batch)
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
            output_tokens=sum(r.completion_tokens for r in done_recs), error=error, batch=batch)

    async def run_program(self, spec: ProgramSpec, batch: bool = False,
                          notify_end: bool = False) -> ProgramRecord:
        """Run `spec`, keep its record, send its program-end notice (when `notify_end`), then report it."""
        rec = await self.program(spec, batch)
        self.result.programs.append(rec)
        if notify_end:
            await self.end(spec)
        if self.on_done:
            self.on_done(rec)
        return rec

    async def end(self, spec: ProgramSpec) -> None:
        """Tell the engine the program ended (best effort: a failed notice only costs the engine a hold)."""
        if not self.opts.send_identity:
            return
        body = {"model": self.opts.model, **end_notice(f"{self.opts.run_tag}:{spec.program_id}")}
        with contextlib.suppress(Exception):
            await self.client.post(self.target.completions_url, json=body, timeout=30)


async def _open_loop(run: _Run, programs: Sequence[ProgramSpec], offset: float = 0.0,
                     notify_end: bool = False) -> None:
    """Start each of `programs` at `offset` + its arrival (seconds on the run's clock; its record's
    arrival) and wait until all ended. After an abort the rest start at once, to fail at once."""
    tasks: list[asyncio.Task[ProgramRecord]] = []
    for spec in sorted(programs, key=lambda p: p.arrival):
        if offset:
            spec = spec.retimed(offset + spec.arrival)
        delay = run.t0 + spec.arrival - time.perf_counter()
        if delay > 0 and not run.abort.is_set():
            try:
                await asyncio.wait_for(run.abort.wait(), delay)
            except TimeoutError:
                pass
        tasks.append(asyncio.create_task(run.run_program(spec, notify_end=notify_end)))
    await asyncio.gather(*tasks)


async def _fleet_slot(run: _Run, todo: Iterator[ProgramSpec], batch: bool = False,
                      stop: asyncio.Event | None = None, ended: ProgramDone | None = None) -> None:
    """One closed-loop slot: it starts the next program of the shared `todo` (arriving now) each time
    its own ends, until `todo` is empty, `stop` is set or the run aborts."""
    for spec in todo:
        if (stop is not None and stop.is_set()) or run.abort.is_set():
            return
        spec = dataclasses.replace(spec, arrival=time.perf_counter() - run.t0)
        rec = await run.run_program(spec, batch, notify_end=True)
        if ended:
            ended(rec)


async def _cut_off(tasks: Sequence[asyncio.Task]) -> None:
    """Cancel `tasks`: cut-off programs' open streams close, so the engine aborts their calls."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _finished(run: _Run) -> RunResult:
    """The run's result, timed, programs in arrival order and calls in issue order."""
    result = run.result
    result.wall_s = time.perf_counter() - run.t0
    result.programs.sort(key=lambda r: r.arrival)
    result.calls.sort(key=lambda r: (r.issued, r.program, r.call))
    return result


async def replay(client: httpx.AsyncClient, target: Target, programs: Sequence[ProgramSpec], rate: float,
                 builder: PromptBuilder, opts: ReplayOptions,
                 on_program_done: ProgramDone | None = None) -> RunResult:
    """Replay `programs` (arrival times already drawn at `rate`) against `target`; never raises for
    endpoint failures."""
    run = _Run(client, target, builder, opts, RunResult(target=target.name, rate=rate), on_program_done)
    await _open_loop(run, programs)
    return _finished(run)


async def replay_closed(client: httpx.AsyncClient, target: Target, programs: Sequence[ProgramSpec],
                        concurrency: int, stop_after: int, builder: PromptBuilder, opts: ReplayOptions,
                        on_program_done: ProgramDone | None = None) -> RunResult:
    """Keep `concurrency` of `programs` in flight, in order, until `stop_after` completed (module
    docstring); never raises for endpoint failures."""
    result = RunResult(target=target.name, rate=0.0, concurrency=concurrency)
    run = _Run(client, target, builder, opts, result, on_program_done)
    todo = iter(programs)
    enough = asyncio.Event()

    def ended(rec: ProgramRecord) -> None:
        if sum(p.ok for p in result.programs) >= stop_after:
            enough.set()

    slots = [asyncio.create_task(_fleet_slot(run, todo, stop=enough, ended=ended))
             for _ in range(concurrency)]
    waiters = [asyncio.create_task(w) for w in (asyncio.wait(slots), enough.wait(), run.abort.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    await _cut_off([*slots, *waiters])
    return _finished(run)


async def replay_mixed(client: httpx.AsyncClient, target: Target, programs: Sequence[ProgramSpec],
                       concurrency: int, interactive: Sequence[ProgramSpec], builder: PromptBuilder,
                       opts: ReplayOptions, on_program_done: ProgramDone | None = None) -> RunResult:
    """A batch fleet of `programs` (`concurrency` in flight) and, from its `concurrency`-th program end
    on, the `interactive` programs at their arrival times; it ends when the last interactive program
    ended (module docstring). Raises FleetRanDry when the fleet had no program left to start before
    then (and after cutting the run off); never raises for endpoint failures."""
    result = RunResult(target=target.name, rate=0.0, concurrency=concurrency)
    run = _Run(client, target, builder, opts, result, on_program_done)
    todo = iter(programs)
    turned = asyncio.Event()

    def ended(rec: ProgramRecord) -> None:
        if sum(p.batch for p in result.programs) >= concurrency:  # (>=: others may end meanwhile)
            turned.set()

    async def stream() -> None:
        await turned.wait()
        await _open_loop(run, interactive, time.perf_counter() - run.t0, notify_end=True)

    streaming = asyncio.create_task(stream())
    slots = [asyncio.create_task(_fleet_slot(run, todo, True, ended=ended)) for _ in range(concurrency)]
    waiters = [asyncio.create_task(w) for w in (asyncio.wait(slots, return_when=asyncio.FIRST_COMPLETED),
                                                run.abort.wait())]
    await asyncio.wait([streaming, *waiters], return_when=asyncio.FIRST_COMPLETED)
    dry = not streaming.done() and not run.abort.is_set()  # a slot ended: it found no program to start
    left = len(interactive) - sum(not p.batch for p in result.programs)
    await _cut_off([*slots, *waiters, streaming])
    if dry:
        raise FleetRanDry(f"{target.name}: the batch fleet ran out of programs (all {len(programs)} started) "
                          f"with {left} of {len(interactive)} interactive program(s) unfinished: draw more "
                          "--programs")
    if not streaming.cancelled():
        streaming.result()  # a bug in the stream surfaces here rather than vanishing
    return _finished(run)
