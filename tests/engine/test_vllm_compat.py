"""The version shims (autellix/engine/compat.py) against the running vLLM: run by scripts/vllm_matrix.sh
once per supported release, with that release's own code."""

from __future__ import annotations

import types

import pytest

pytest.importorskip("vllm")

from autellix.engine import compat  # noqa: E402
from autellix.engine.fake import Runner, ctx, make_request, make_scheduler  # noqa: E402
from autellix.engine.vllm_queue import LevelQueue  # noqa: E402


def test_the_running_release_is_supported():
    version = compat.vllm_version()
    assert compat.is_supported(version), version


def test_every_waiting_queue_of_this_release_is_a_level_queue():
    sched = make_scheduler("plas")
    names = compat.waiting_queue_names(sched)
    assert names[:2] == ["waiting", "kv_holding_waiting"]
    assert all(isinstance(getattr(sched, n), LevelQueue) for n in names)
    assert ("async_kv_waiting" in names) == hasattr(make_scheduler(None), "async_kv_waiting")


def test_a_preempted_call_is_seen_resumed_whichever_field_carries_it():
    sched = make_scheduler("plas", max_num_seqs=1, boundaries="0,8,inf", prefill_weight=0.0, preempt_gap=1)
    run = Runner(sched)
    run.add(make_request(ctx("big"), prompt_tokens=20, max_tokens=40, request_id="big"))
    for _ in range(12):
        run.step()  # big is demoted after 8 tokens
    run.add(make_request(ctx("small"), prompt_tokens=20, max_tokens=3, request_id="small"))
    run.run()
    assert sched.autellix_stats["preemptions"] == 1  # small preempted big, which then resumed
    assert run.finished == ["small", "big"] and sched.autellix.num_waiting == 0


def test_sampled_rows_follow_this_releases_output():
    out = compat.model_runner_output(["a", "b"], [[1], []])
    assert compat.sampled_index(out) == {"a": 0, "b": 1}
    assert compat.sampled_index(types.SimpleNamespace(req_ids=["x"])) == {"x": 0}


def test_a_broken_interface_fails_loudly_naming_what_is_missing():
    with pytest.raises(compat.InterfaceChanged, match="kv_holding_waiting"):
        compat.waiting_queue_names(types.SimpleNamespace(waiting=[]))
    with pytest.raises(compat.InterfaceChanged, match="req_id_to_index"):
        compat.sampled_index(types.SimpleNamespace())
    assert compat.is_supported("0.34.1") and compat.is_supported("0.32.0+cpu")
    assert not compat.is_supported("0.35.0") and not compat.is_supported("0.31.2")


# Every vLLM internal the plugin touches (docs/vllm-notes.md tables them per release): present in the
# running release, or the matrix line for that release fails naming it.
SCHEDULER_METHODS = ("add_request", "schedule", "update_from_output", "_preempt_request", "_free_request",
                     "_request_blocks_can_be_freed", "has_requests", "finish_requests")
SCHEDULER_STATE = ("running", "requests", "max_num_active_reqs", "num_waiting_for_streaming_input",
                   "kv_cache_manager", "block_size", "vllm_config", "policy", "waiting", "kv_holding_waiting")
REQUEST_FIELDS = ("request_id", "priority", "status", "num_tokens", "num_computed_tokens",
                  "num_prompt_tokens", "sampling_params", "output_token_ids", "arrival_time")


def test_every_vllm_internal_the_plugin_touches_exists():
    from vllm.v1.core.sched.request_queue import RequestQueue, SchedulingPolicy
    from vllm.v1.request import RequestStatus

    sched = make_scheduler("plas")
    missing = [f"Scheduler.{m}" for m in SCHEDULER_METHODS if not callable(getattr(sched, m, None))]
    missing += [f"Scheduler.{a}" for a in SCHEDULER_STATE if not hasattr(sched, a)]
    pool = sched.kv_cache_manager.block_pool
    missing += [f"BlockPool.{a}" for a in ("get_num_free_blocks", "num_gpu_blocks") if not hasattr(pool, a)]
    request = make_request(ctx("p"), prompt_tokens=4, max_tokens=2)
    missing += [f"Request.{f}" for f in REQUEST_FIELDS if not hasattr(request, f)]
    missing += [f"RequestStatus.{s}" for s in ("WAITING", "PREEMPTED", "RUNNING")
                if not hasattr(RequestStatus, s)]
    missing += [] if hasattr(SchedulingPolicy, "PRIORITY") else ["SchedulingPolicy.PRIORITY"]
    missing += [f"RequestQueue.{m} (abstract, LevelQueue lacks it)" for m in RequestQueue.__abstractmethods__
                if m not in LevelQueue.__dict__]
    assert request.sampling_params.extra_args == ctx("p")  # vllm_xargs reach the scheduler as sent
    assert isinstance(sched.vllm_config.additional_config, dict)
    run = Runner(sched)
    run.add(request)
    out = sched.schedule()
    missing += [] if hasattr(out, "num_scheduled_tokens") else ["SchedulerOutput.num_scheduled_tokens"]
    missing += [] if all(hasattr(r, "req_id") for r in out.scheduled_new_reqs) else ["NewRequestData.req_id"]
    assert missing == []
