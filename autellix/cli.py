"""`autellix` command line: one subcommand per job; each module registers its own arguments."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from autellix.sim.toy import SCENARIOS, run_scenario


def _write_json(path: str | None, payload: object) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def cmd_sim(args: argparse.Namespace) -> int:
    if args.scenario:
        results = run_scenario(args.scenario, args.policy.split(",") if args.policy else None)
        scenario = SCENARIOS[args.scenario]
        print(f"{scenario.name}: {scenario.about}")
        print(f"{'policy':<10} {'total wait':>10} {'makespan':>9}  per-call wait")
        for name, r in results.items():
            waits = " ".join(f"{k}={v}" for k, v in sorted(r.waits.items()))
            print(f"{name:<10} {r.total_wait:>10} {r.makespan:>9}  {waits}")
        _write_json(args.json, {
            "scenario": scenario.name,
            "total_wait": {n: r.total_wait for n, r in results.items()},
            "makespan": {n: r.makespan for n, r in results.items()},
            "call_wait": {n: r.waits for n, r in results.items()},
        })
        return 0
    from autellix.sim.cli import run_sweep_command  # heavy imports only when used
    return run_sweep_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autellix",
        description="Program-aware serving for LLM agents: scheduling policies, vLLM plugin, gateway, "
                    "simulator and benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = sub.add_parser("sim", help="simulate policies: the paper's toy scenarios or agent workloads",
                         description="Run the policy core on a simulated engine. With --scenario: the "
                                     "paper's unit-step toy examples. Otherwise: a workload rate sweep.")
    sim.add_argument("--scenario", choices=sorted(SCENARIOS), help="a unit-step toy scenario")
    sim.add_argument("--policy", help="comma-separated policies (default: the scenario's set)")
    sim.add_argument("--json", metavar="OUT", help="write results as JSON to OUT")
    _add_optional(sub, "autellix.sim.cli", "add_sweep_arguments", sim)
    sim.set_defaults(func=cmd_sim)

    _add_optional(sub, "autellix.model", "add_model_commands")
    _add_optional(sub, "autellix.deploy.launch", "add_engine_commands")
    _add_optional(sub, "autellix.deploy.serve", "add_serve_commands")
    _add_optional(sub, "autellix.bench.cli", "add_bench_commands")
    return parser


def _add_optional(sub: argparse._SubParsersAction, module: str, function: str,
                  *extra: argparse.ArgumentParser) -> None:
    """Register a module's subcommands; modules that are not part of this build are skipped."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return
        raise
    getattr(mod, function)(*(extra or (sub,)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse a command line. Whatever follows the first `--` goes to vLLM unchanged, as `vllm_args`
    (`engine`, `serve`); options may come before or after the model (argparse's REMAINDER would hand
    every option after the model to vLLM)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "vllm_args"):
        args.vllm_args = passthrough
    elif passthrough:
        parser.error(f"{args.command} takes no arguments after --")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"autellix {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
