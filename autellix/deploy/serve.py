"""`autellix serve [MODEL] --engines N --policy P --balancer B --port PORT [--engine-url URL ...]`

Starts N local vLLM engines with the Autellix scheduler (each on its own port, process group and GPU
slice), waits until all answer /health while showing progress, then serves the gateway on PORT until
Ctrl-C or SIGTERM, and then stops every engine (whole process groups). `--engine-url` attaches engines
that run elsewhere (the multi-machine path); with it, no local engine starts unless --engines is given.
`--ray [ADDRESS]` lets Ray place, restart and scale the engines on its cluster instead (docs/deploy.md).
Arguments after `--` go to every vLLM engine unchanged. `--policy thunderagent` starts stock vLLM
engines and turns on the gateway's pause gate (ThunderAgent's rule: autellix.gateway.pausing).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from autellix.gateway.config import GatewayConfig
from autellix.policy.config import PolicyConfig
from autellix.policy.systems import system

if TYPE_CHECKING:
    from autellix.deploy.ray_engines import RayEngines
    from autellix.deploy.shared_programs import SharedPrograms
    from autellix.deploy.supervisor import Supervisor

log = logging.getLogger("autellix.serve")

KEEP_ALIVE_S = 75
"""Seconds uvicorn keeps an idle client connection. Longer than clients' own idle limits (httpx 5 s,
aiohttp 15 s), so the client always closes first: a client never sends a request on a connection the
gateway is closing at that instant (which would fail with a reset although the gateway did nothing)."""



def _alias(text: str) -> str:
    pattern, _, model = text.partition("=")
    if not pattern or not model:
        raise argparse.ArgumentTypeError(f"need PATTERN=MODEL, got {text!r}")
    return text

def add_serve_commands(subparsers: argparse._SubParsersAction) -> None:
    from autellix.balance import BALANCERS
    from autellix.policy.systems import SERVE_SYSTEMS

    p = subparsers.add_parser(
        "serve", help="serve an OpenAI-compatible gateway over N vLLM engines with Autellix scheduling",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", help="model folder or name (default: the prepared SmolLM2 model)")
    p.add_argument("--engines", type=int, default=None,
                   help="local engines to start (default 1, or 0 when --engine-url is given)")
    p.add_argument("--engine-url", action="append", default=[], metavar="URL",
                   help="attach an engine already running at URL (repeatable)")
    p.add_argument("--policy", default="autellix", choices=SERVE_SYSTEMS,
                   help="scheduling system: `vllm` = stock engines; `thunderagent` = stock engines behind "
                        "the gateway's pause gate (ThunderAgent); the others run in the engines' plugin")
    p.add_argument("--kv-capacity", type=int, default=None, metavar="TOKENS",
                   help="thunderagent: the engines' total KV cache in tokens (default: what each engine's "
                        "/metrics reports, vllm:cache_config_info num_gpu_blocks x block_size)")
    p.add_argument("--balancer", default="locality", choices=sorted(BALANCERS))
    p.add_argument("--host", default="127.0.0.1", help="gateway address (0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, default=8000, help="gateway port")
    p.add_argument("--engine-port", type=int, default=None,
                   help="first local engine port (default PORT+1; engine i uses it + i)")
    p.add_argument("--max-num-seqs", type=int, default=None, help="vLLM batch size limit per engine")
    p.add_argument("--eager", action="store_true", help="engines skip torch.compile / CUDA graphs")
    p.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help="accepted API key (repeatable; also AUTELLIX_API_KEYS=k1,k2)")
    p.add_argument("--long-prompt", type=int, default=2048,
                   help="locality balancer: prompts above this many tokens go to the program's engine")
    p.add_argument("--program-ttl", type=float, default=None,
                   help="seconds an idle program stays in the table (default AUTELLIX_TABLE_TTL or 600)")
    p.add_argument("--infer-programs", choices=("on", "off"), default="on",
                   help="calls that name no program: infer it from the conversation (on, default) or run "
                        "each as a one-call program (off)")
    p.add_argument("--user-programs", action="store_true",
                   help="OpenAI's `user` field names the program (off by default: a user may run many)")
    p.add_argument("--max-body-mb", type=float, default=32.0,
                   help="largest request body accepted, in MiB (413 past it)")
    p.add_argument("--model-alias", action="append", default=[], metavar="PATTERN=MODEL",
                   type=_alias, help="calls whose model matches PATTERN (fnmatch, e.g. 'claude-*' or '*') "
                                     "go to MODEL (repeatable; first match wins)")
    p.add_argument("--log-dir", type=Path, default=None, help="engine logs (default: a cache folder)")
    p.add_argument("--startup-timeout", type=float, default=900.0, help="seconds to wait for engines")
    p.add_argument("--no-restart", action="store_true", help="do not restart local engines that die")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="let Ray place and restart the engines: join the cluster at ADDRESS (e.g. "
                        "ray://head:10001 or auto), or start a one-machine one on loopback (127.0.0.1, no "
                        "dashboard) when none is given; scale with POST /v1/admin/engines")
    p.add_argument("--allow-untested-vllm", action="store_true",
                   help="start local engines even if the installed vLLM is not a tested release")
    p.set_defaults(func=cmd_serve, vllm_args=[])  # autellix.cli.parse_args: what follows `--`


class _Terminated(BaseException):
    """SIGTERM: a requested, clean shutdown."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated()  # unwinds through `finally`, which stops the engines


def gateway_config(args: argparse.Namespace, urls: list[str], dynamic: bool = False) -> GatewayConfig:
    keys = set(args.api_key) | {k for k in os.environ.get("AUTELLIX_API_KEYS", "").split(",") if k}
    policy = PolicyConfig.from_env()  # the same AUTELLIX_* knobs the engines read
    if args.program_ttl is not None:
        policy = policy.replace(table_ttl=args.program_ttl)
    return GatewayConfig(engines=tuple(urls), dynamic_engines=dynamic, balancer=args.balancer,
                         long_prompt=args.long_prompt, system=args.policy,
                         kv_capacity_tokens=args.kv_capacity, api_keys=frozenset(keys), policy=policy,
                         infer_programs=args.infer_programs == "on", user_programs=args.user_programs,
                         max_body_bytes=int(args.max_body_mb * (1 << 20)),
                         model_aliases=tuple(tuple(a.split("=", 1)) for a in args.model_alias))


def cmd_serve(args: argparse.Namespace) -> int:
    if getattr(args, "ray", None) is not None:
        return _serve_on_ray(args)
    n = args.engines if args.engines is not None else (0 if args.engine_url else 1)
    if n < 0 or (n == 0 and not args.engine_url):
        raise ValueError("--engines: need at least one engine (local or --engine-url)")
    extra = list(args.vllm_args)
    base_port = args.engine_port or args.port + 1
    local_urls = [f"http://127.0.0.1:{base_port + i}" for i in range(n)]
    config = gateway_config(args, local_urls + args.engine_url)  # validate before starting anything
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    # Ctrl-C must stop the engines even when started from a script's background job (which inherits
    # SIGINT as ignored): always raise KeyboardInterrupt, so that `finally` runs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    supervisor = None
    try:
        if n:
            # Assigned before anything starts, so that `finally` stops whatever did start.
            supervisor = _make_supervisor(args, n, base_port, extra)
            supervisor.start_all()
            _wait_local(supervisor, args.startup_timeout)
        _wait_attached(args.engine_url)
        if supervisor is not None:
            supervisor.start_monitor()
        return _run_gateway(config, args.host, args.port)
    except KeyboardInterrupt:
        return 130
    except _Terminated:
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"autellix serve: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if supervisor is not None:
            print("stopping engines ...", file=sys.stderr, flush=True)
            supervisor.stop_all()
            print("all engines stopped", file=sys.stderr, flush=True)


def _make_supervisor(args: argparse.Namespace, n: int, base_port: int, extra: list[str]) -> Supervisor:
    from autellix.deploy.launch import check_vllm_version
    from autellix.deploy.supervisor import Supervisor
    from autellix.model import cache_root, resolve_model

    check_vllm_version(args.allow_untested_vllm)
    model = resolve_model(args.model)
    log_dir = args.log_dir or cache_root() / "logs" / f"serve-{args.port}"
    kwargs = {"max_num_seqs": args.max_num_seqs, "eager": args.eager, "extra": extra}
    engine = system(args.policy).engine
    print(f"starting {n} engine(s): {model} policy={engine}", file=sys.stderr, flush=True)
    return Supervisor(model, engine, [base_port + i for i in range(n)], log_dir, kwargs,
                      restart=not args.no_restart, report=lambda m: print(m, file=sys.stderr, flush=True))


def _wait_local(supervisor: Supervisor, timeout: float) -> None:
    """Block until every local engine is healthy, printing progress; fail fast if one exits."""
    from autellix.deploy.supervisor import answers_health

    t0, last, tty = time.monotonic(), "", sys.stderr.isatty()
    while True:
        for engine in supervisor.engines:
            engine.ready = engine.ready or answers_health(engine.url)
        dead = supervisor.exited()
        if dead:
            e = dead[0]
            tail = e.log.read_text(errors="replace").splitlines()[-15:] if e.log.exists() else []
            raise RuntimeError(f"engine-{e.index} exited with code {e.process.returncode} while starting; "
                               f"last lines of {e.log}:\n" + "\n".join(tail))
        elapsed = time.monotonic() - t0
        engines = supervisor.engines
        status = "  ".join(f"engine-{e.index}:{'ready' if e.ready else 'starting'}" for e in engines)
        line = f"[{elapsed:5.0f}s] {sum(e.ready for e in engines)}/{len(engines)} ready  {status}"
        if tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        elif status != last or int(elapsed) % 30 == 0:
            print(line, file=sys.stderr, flush=True)
        last = status
        if all(e.ready for e in supervisor.engines):
            if tty:
                print(file=sys.stderr)
            return
        if elapsed > timeout:
            raise TimeoutError(f"engines not ready after {timeout:.0f}s (logs: {engines[0].log.parent})")
        time.sleep(1.0)


def _wait_attached(urls: list[str], timeout: float = 10.0) -> None:
    """Attached engines are not ours to wait for long: warn about those down; the gateway's health
    checks add them as soon as they answer."""
    from autellix.deploy.supervisor import answers_health

    deadline = time.monotonic() + timeout
    down = list(urls)
    while down and time.monotonic() < deadline:
        down = [u for u in down if not answers_health(u)]
        if down:
            time.sleep(0.5)
    for url in down:
        print(f"warning: attached engine {url} is not healthy yet; it joins when it is", file=sys.stderr)


def engine_resources(vllm_args: list[str], gpu_build: bool) -> tuple[float, float]:
    """(CPUs, GPUs) one engine asks Ray for: 1 CPU, and on GPU builds tensor x pipeline parallel GPUs."""
    if not gpu_build:
        return 1.0, 0.0
    sizes = {"--tensor-parallel-size": 1, "-tp": 1, "--pipeline-parallel-size": 1, "-pp": 1}
    for i, arg in enumerate(vllm_args):
        name, _, value = arg.partition("=")
        if name in sizes:
            sizes[name] = int(value or vllm_args[i + 1])
    return 1.0, float(max(sizes["--tensor-parallel-size"], sizes["-tp"])
                      * max(sizes["--pipeline-parallel-size"], sizes["-pp"]))


def _serve_on_ray(args: argparse.Namespace) -> int:
    from autellix.deploy.launch import on_cpu_build
    from autellix.deploy.ray_engines import RayEngines
    from autellix.deploy.shared_programs import SharedPrograms
    from autellix.model import resolve_model

    if args.engine_url:
        raise ValueError("--ray: engines come from Ray; drop --engine-url")
    n = args.engines if args.engines is not None else 1  # 0: a further replica, using the engines there
    if n < 0:
        raise ValueError("--engines: must be >= 0")
    config = gateway_config(args, [], dynamic=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    model = resolve_model(args.model)  # the same path must hold the model on every node
    cpus, gpus = engine_resources(list(args.vllm_args), gpu_build=not on_cpu_build())
    kwargs = {"max_num_seqs": args.max_num_seqs, "eager": args.eager, "extra": list(args.vllm_args)}
    engine = system(args.policy).engine
    print(f"starting {n} engine(s) on Ray ({args.ray or 'a local cluster'}): {model} policy={engine}, "
          f"{cpus:g} CPU and {gpus:g} GPU each", file=sys.stderr, flush=True)
    engines = RayEngines(args.ray or None, str(model), engine, kwargs, cpus=cpus, gpus=gpus)
    import ray

    print(f"Ray cluster at {ray.get_runtime_context().gcs_address} (further replicas: --ray ADDRESS "
          "--engines 0)", file=sys.stderr, flush=True)
    try:
        engines.discover()  # engines another replica of this deployment started, if any
        engines.start(max(0, n - engines.count))  # --engines N: at least N in the deployment
        shared = SharedPrograms.connect(config.policy)  # the process table all replicas share
        return _run_gateway(config, args.host, args.port, engines, shared)
    except KeyboardInterrupt:
        return 130
    except _Terminated:
        return 0
    finally:
        print("stopping engines ...", file=sys.stderr, flush=True)
        engines.shutdown()
        print("all engines stopped", file=sys.stderr, flush=True)


def _run_gateway(config: GatewayConfig, host: str, port: int, ray_engines: RayEngines | None = None,
                 shared: SharedPrograms | None = None) -> int:
    import uvicorn

    from autellix.gateway.app import create_app

    app = create_app(config, ray_engines, shared)
    names = ", ".join(f"engine-{i}={u}" for i, u in enumerate(config.engines)) or "engines from Ray"
    gate = "; pause gate on" if config.pause_gate else ""
    print(f"gateway on http://{host}:{port}/v1  ({names}; balancer={config.balancer}{gate})",
          file=sys.stderr, flush=True)
    # uvicorn turns SIGINT/SIGTERM into a graceful shutdown, then re-raises the signal, which lands in
    # our handlers (KeyboardInterrupt / _terminate): the caller's `finally` then stops the engines.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=5)
    return 0
