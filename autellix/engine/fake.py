"""A real vLLM V1 scheduler with no model: a tiny model config, a small KV cache and a fake runner.

For the plugin's unit tests (tests/engine) and its overhead benchmark (scripts/bench_plugin.py). vLLM's
own scheduler tests do the same (tests/v1/core/utils.py: `create_scheduler`, hand-built
`ModelRunnerOutput`). The fake runner samples token 100 + k as a request's k-th output token, so a
request's output is [100, 101, ...] whatever preemptions and recomputes happen in between.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import sha256
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

from autellix.context import to_xargs
from autellix.engine.compat import model_runner_output
from autellix.engine.vllm import AutellixAsyncScheduler, AutellixScheduler

BLOCK = 16
FIRST_TOKEN = 100
_TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
         "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
         "num_hidden_layers": 2, "vocab_size": 1024, "max_position_embeddings": 4096,
         "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
_model_dir: Path | None = None
_ids = itertools.count()
_hasher = None


def tiny_model_dir() -> Path:
    """A model folder holding only config.json: enough for ModelConfig, no weights or tokenizer."""
    global _model_dir
    if _model_dir is None:
        _model_dir = Path(tempfile.mkdtemp(prefix="autellix-tiny-"))
        (_model_dir / "config.json").write_text(json.dumps(_TINY))
    return _model_dir


def make_scheduler(policy: str | None = "plas", *, max_num_seqs: int = 2, num_blocks: int = 256,
                   max_tokens_per_step: int = 512, max_model_len: int | None = None,
                   prefix_caching: bool = True, async_scheduling: bool = False,
                   **settings: Any) -> Scheduler:
    """AutellixScheduler (or vLLM's stock Scheduler when policy is None) with the given PolicyConfig
    settings, passed through vLLM's additional_config as an operator would."""
    sc = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_tokens_per_step,
                         max_model_len=max_model_len or max_tokens_per_step, enable_chunked_prefill=True,
                         async_scheduling=async_scheduling,
                         policy="fcfs" if policy is None else "priority",
                         is_encoder_decoder=False)
    mc = ModelConfig(model=str(tiny_model_dir()), skip_tokenizer_init=True, dtype="float32", seed=0,
                     max_model_len=max_model_len or max_tokens_per_step)
    cc = CacheConfig(block_size=BLOCK, cache_dtype="auto", enable_prefix_caching=prefix_caching)
    extra = {} if policy is None else {"autellix": {"policy": policy, **settings}}
    vc = VllmConfig(scheduler_config=sc, model_config=mc, cache_config=cc, additional_config=extra)
    spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=1, head_size=1, dtype=torch.float32)
    kv = KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[],
                       kv_cache_groups=[KVCacheGroupSpec(["layer"], spec)])
    cc.num_gpu_blocks = num_blocks
    if async_scheduling:
        cls = AsyncScheduler if policy is None else AutellixAsyncScheduler
    else:
        cls = Scheduler if policy is None else AutellixScheduler
    return cls(vllm_config=vc, kv_cache_config=kv, structured_output_manager=StructuredOutputManager(vc),
               block_size=BLOCK, log_stats=False)


def make_request(xargs: Any = None, *, prompt_tokens: int = 20, max_tokens: int = 8,
                 request_id: str | None = None, arrival: float | None = None,
                 prompt: list[int] | None = None) -> Request:
    """A request with a distinct prompt of `prompt_tokens` tokens, or exactly `prompt` (a later turn
    that extends an earlier request's prompt + output shares its cached blocks)."""
    global _hasher
    if _hasher is None:
        init_none_hash(sha256)
        _hasher = get_request_block_hasher(BLOCK, sha256)
    n = next(_ids)
    sp = SamplingParams(max_tokens=max_tokens, ignore_eos=True, extra_args=xargs)
    if prompt is None:  # distinct prompts per request, so prefix caching never shares blocks by accident
        prompt = [(n * 7 + i) % 900 + 3 for i in range(prompt_tokens)]
    return Request(request_id=request_id or f"r{n}", prompt_token_ids=prompt, sampling_params=sp,
                   pooling_params=None, block_hasher=_hasher, arrival_time=arrival)


def ctx(program: str, service: float | None = None, thread: str = "0",
        wait: float | None = None, batch: bool | None = None) -> dict[str, str | float]:
    """A request's `extra_args` for a call of `program` (the gateway's wire format)."""
    return to_xargs(program, thread, service, wait, batch)


@dataclass
class Runner:
    """Drives schedule() / update_from_output() like EngineCore.step, with a fake model."""

    sched: Scheduler
    steps: int = 0
    tokens: dict[str, list[int]] = field(default_factory=dict)
    finished: list[str] = field(default_factory=list)
    scheduled: list[list[str]] = field(default_factory=list)
    """Request ids given tokens in each step, in batch order."""
    hits: dict[str, int] = field(default_factory=dict)
    """Request id -> prompt tokens its first scheduling found in the prefix cache."""

    def add(self, *requests: Request) -> None:
        for r in requests:
            self.sched.add_request(r)

    def step(self) -> list[str]:
        out = self.sched.schedule()
        for new in out.scheduled_new_reqs:
            self.hits.setdefault(new.req_id, new.num_computed_tokens)
        ids = list(out.num_scheduled_tokens)
        sampled = []
        for rid in ids:
            r = self.sched.requests[rid]
            done_prefill = r.num_computed_tokens >= r.num_tokens
            sampled.append([FIRST_TOKEN + len(r.output_token_ids)] if done_prefill else [])
        mro = model_runner_output(ids, sampled)
        result = self.sched.update_from_output(out, mro)
        for outputs in result.values():
            for o in outputs.outputs:
                self.tokens.setdefault(o.request_id, []).extend(o.new_token_ids)
                if o.finish_reason is not None:
                    self.finished.append(o.request_id)
        self.steps += 1
        self.scheduled.append(ids)
        return ids

    def run(self, max_steps: int = 1000) -> None:
        while self.sched.has_requests() and max_steps > 0:
            self.step()
            max_steps -= 1
        assert not self.sched.has_requests(), "requests still unfinished"

    def first_step(self, rid: str) -> int:
        return next(i for i, ids in enumerate(self.scheduled) if rid in ids)
