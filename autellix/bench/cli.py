"""`autellix bench` (replay agent workloads against OpenAI endpoints) and `autellix calibrate` (measure an
engine's step costs for the simulator). Registered by autellix/cli.py through `add_bench_commands`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import httpx


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _ints(text: str) -> list[int]:
    return [int(v) for v in _floats(text)]


def add_bench_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `bench` and `calibrate`."""
    b = subparsers.add_parser(
        "bench", help="replay agent workloads against OpenAI endpoints (real engines), same report as sim",
        description="Replay a workload's programs (real text, fixed output lengths, threads in parallel) "
                    "against each target, interleaved: open loop at Poisson arrival rates (--rates: "
                    "latency and throughput at equal latency) or closed loop with N programs in flight "
                    "(--concurrency: steady-state calls/min, programs/h, JCT, prefix-cache hits). "
                    "See docs/bench.md.")
    b.add_argument("--workload", required=True, help="chat, react, tree, coding, mixed, mooncake")
    b.add_argument("--target", action="append", required=True, metavar="NAME=URL",
                   help="an OpenAI-compatible endpoint (repeat for several; NAME becomes the row's policy)")
    load = b.add_mutually_exclusive_group(required=True)
    load.add_argument("--rates", type=_floats, metavar="R1,R2,...", help="open loop: programs per second")
    load.add_argument("--concurrency", type=_ints, metavar="N1,N2,...",
                      help="closed loop: programs in flight (the next starts when one ends)")
    b.add_argument("--programs", required=True, metavar="N|N1,N2,...",
                   help="open loop: programs per rate point, or one count per rate (the first N of one "
                        "draw, so every rate replays a prefix of the same programs); closed loop: the "
                        "completions each point runs until (the first 20%% are warm-up)")
    b.add_argument("--repeats", type=int, default=2,
                   help="closed loop: runs of each point, for the spread (default 2)")
    b.add_argument("--interactive", metavar="WORKLOAD",
                   help="with --concurrency: the fleet is batch (its calls send x-autellix-class: batch) "
                        "and an open-loop stream of this workload's programs, interactive, arrives beside it "
                        "once it has turned over; a run ends with the stream's last program; each class's "
                        "figures (docs/bench.md, 'Interactive and batch')")
    b.add_argument("--interactive-rate", type=float, default=0.1, metavar="R",
                   help="the interactive stream's arrivals, programs/s (default 0.1)")
    b.add_argument("--interactive-programs", type=int, default=20, metavar="M",
                   help="interactive programs per run (default 20)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--scale", type=float, default=1.0, help="multiply every token count (default 1)")
    b.add_argument("--json", metavar="OUT", required=True, help="write results and per-call records here")
    b.add_argument("--plot", metavar="OUT.png", help="latency-vs-rate plot")
    b.add_argument("--model", help="model name to request (default: the target's first model)")
    b.add_argument("--tokenizer", help="tokenizer.json or model folder used to size prompts, or 'gpt2' "
                                       "(default: the target's model folder when local, else the default "
                                       "model's, else GPT-2)")
    b.add_argument("--timeout", type=float, default=600.0, help="seconds per call (default 600)")
    b.add_argument("--cooldown", type=float, default=2.0, help="idle seconds between runs (default 2)")
    b.add_argument("--latency-multiples", type=_floats, metavar="M1,M2,...",
                   help="latency targets for throughput at equal latency, as multiples of the first "
                        "target's latency at the lowest rate (default: the report's, 2,5,10)")
    b.add_argument("--no-cache-salt", action="store_true",
                   help="do not send vLLM's cache_salt (for servers that reject unknown fields)")
    b.add_argument("--no-identity", action="store_true",
                   help="send no program identity (X-Program-ID headers, vllm_xargs)")
    b.set_defaults(func=_cmd_bench)

    c = subparsers.add_parser(
        "calibrate",
        help="measure an engine's prefill and decode step costs into a simulator calibration file",
        description="Time prefills (TTFT) and decode steps (stream chunk gaps) of an idle engine through its "
                    "OpenAI API and write them in the format `autellix sim` and load_cost_model(path=...) "
                    "read. See docs/bench.md.")
    c.add_argument("--target", required=True, metavar="URL", help="the engine's base URL")
    c.add_argument("--out", default="calibration.json", help="output file (default calibration.json)")
    c.add_argument("--key", help="model entry name in the file (default: the served model's folder name)")
    c.add_argument("--model", help="model name to request (default: the target's first model)")
    c.add_argument("--model-path", help="local model folder for config/weights/tokenizer (default: the "
                                        "engine's reported model root when it exists here)")
    c.add_argument("--tokenizer", help="as for bench")
    c.add_argument("--device", default="cpu", help="device label written into the file (default cpu)")
    c.add_argument("--prefill-lengths", type=_ints, metavar="N1,N2,...",
                   help="prompt lengths (default 16,64,128,256,512,1024,2048,4096)")
    c.add_argument("--batches", type=_ints, metavar="B1,B2,...", help="decode batch sizes (default 1,2,4,8; "
                                                                       "keep <= the engine's max-num-seqs)")
    c.add_argument("--contexts", type=_ints, metavar="L1,L2,...",
                   help="decode contexts (default 128,512,2048)")
    c.add_argument("--decode-tokens", type=int, default=32, help="output tokens per decode request")
    c.add_argument("--repeats", type=int, default=3, help="prefill repetitions (median)")
    c.add_argument("--kv-capacity-tokens", type=int, help="engine KV capacity (default: from its /metrics)")
    c.add_argument("--block-size", type=int,
                   help="engine KV block size in tokens (default: from its /metrics)")
    c.set_defaults(func=_cmd_calibrate)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.interactive and not args.concurrency:
        raise ValueError("--interactive: needs a closed-loop fleet (--concurrency), not --rates")
    if args.concurrency:
        from autellix.bench.fleet import run_fleet_command  # heavy imports only when used

        return run_fleet_command(args)
    from autellix.bench.bench_report import report_bench
    from autellix.bench.plan import plan_from_args
    from autellix.bench.sweep import run_bench

    return report_bench(asyncio.run(run_bench(plan_from_args(args))), args)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    return asyncio.run(_calibrate(args))


async def _calibrate(args: argparse.Namespace) -> int:
    from autellix.bench import calibrate as cal
    from autellix.bench.calibration_file import (
        block_size_from_metrics,
        build_profile,
        kv_capacity_from_metrics,
        model_facts,
    )
    from autellix.bench.prompts import PromptBuilder, load_tokenizer, local_tokenizer_for
    from autellix.bench.targets import parse_target, probe

    target = parse_target(f"engine={args.target}")
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=None)) as client:
        info = await probe(client, target)
        if info.error:
            raise ValueError(f"calibrate: {target.base_url} did not answer GET /v1/models: {info.error}")
        root = args.model_path or info.root
        facts = model_facts(root)
        if facts is None:
            raise ValueError(f"calibrate: model folder {root!r} is not on this machine: pass --model-path")
        r = await client.get(f"{target.base_url}/metrics")
        metrics = r.text if r.status_code == 200 else ""
        capacity = args.kv_capacity_tokens or kv_capacity_from_metrics(metrics)
        block = args.block_size or block_size_from_metrics(metrics)
        if block is None:
            raise ValueError("calibrate: KV block size not in the engine's /metrics: pass --block-size")
        if capacity is None:
            raise ValueError("calibrate: KV capacity not in the engine's /metrics: pass --kv-capacity-tokens")
        builder = PromptBuilder(load_tokenizer(args.tokenizer or local_tokenizer_for(root)))
        model = args.model or info.model
        print(f"calibrating {target.base_url} (model {model}, tokenizer {builder.info.source})",
              file=sys.stderr)
        prober = cal.Prober(client, target, model or "", builder)
        m = await cal.measure(
            prober, args.prefill_lengths or cal.DEFAULT_PREFILL, args.batches or cal.DEFAULT_BATCHES,
            args.contexts or cal.DEFAULT_CONTEXTS, args.decode_tokens, args.repeats, info.max_model_len,
            progress=lambda line: print("  " + line, file=sys.stderr))
    key = args.key or Path(model or "model").name
    profile = build_profile(m, key, facts, capacity, args.device, target.base_url, block)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(profile, indent=1) + "\n")
    _report_fit(args.out, key)
    return 0


def _report_fit(path: str, key: str) -> None:
    """Load the file back with the simulator's loader (proves the format) and print its fit errors."""
    from autellix.sim.cost import fit_points, load_cost_model, relative_errors

    cm = load_cost_model(path=path, model=key)
    profile = json.loads(Path(path).read_text())
    points = fit_points(profile, key, cm)
    errs = ", ".join(f"{k} {relative_errors(v)[0]:.1%}" for k, v in points.items() if v and k != "swap")
    print(f"wrote {path} (entry {key!r}; KV capacity {cm.kv_capacity_tokens} tokens). "
          f"Cost-model fit mean error: {errs}.")
    print(f"load it with: load_cost_model(path={path!r}, model={key!r})")
