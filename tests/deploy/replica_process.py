"""A gateway replica as its own process, sharing the deployment's ProgramStore through Ray (what
`autellix serve --ray ADDRESS --engines 0` runs, with fixed engine URLs instead of Ray's engines, so
that tests of the store need no vLLM). Not a test module: tests start it with subprocess.

    python tests/deploy/replica_process.py --ray ADDRESS --namespace NS --port PORT --engine URL [...]
"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from autellix.deploy.ray_engines import init_ray
from autellix.deploy.shared_programs import SharedPrograms
from autellix.gateway import GatewayConfig, create_app
from autellix.policy.config import PolicyConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ray", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--engine", action="append", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    init_ray(args.ray, args.namespace)
    policy = PolicyConfig()
    shared = SharedPrograms.connect(policy, timeout=5.0)
    config = GatewayConfig(engines=tuple(args.engine), health_interval=0.2, policy=policy)
    uvicorn.run(create_app(config, shared=shared), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
