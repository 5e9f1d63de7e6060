"""`autellix` command line: one subcommand per job; each module registers its own arguments."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autellix",
        description="Program-aware serving for LLM agents: scheduling policies, vLLM plugin, gateway, "
                    "simulator and benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_optional(sub, "autellix.sim.cli", "add_sim_commands")
    _add_optional(sub, "autellix.model", "add_model_commands")
    _add_optional(sub, "autellix.deploy.launch", "add_engine_commands")
    _add_optional(sub, "autellix.deploy.serve", "add_serve_commands")
    _add_optional(sub, "autellix.bench.cli", "add_bench_commands")
    return parser


def _add_optional(sub: argparse._SubParsersAction, module: str, function: str) -> None:
    """Register a module's subcommands; modules that are not part of this build are skipped."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return
        raise
    getattr(mod, function)(sub)


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
