"""Run every example in README.md, verbatim, against a running `make serve`, and print how long each took.

    make serve &                                   # in another terminal; wait until it is ready
    .venv/bin/python scripts/readme_examples.py    # one line per example: seconds, exit status

An example is a ```python or ```bash block of the README; the set-up block (the one running `make`) is
skipped. Each block runs in a fresh process, in order, from the repository root, with a time limit.
Exits non-zero if any example fails or runs past `--limit` seconds.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.S | re.M)


def examples(readme: Path) -> list[tuple[str, str]]:
    """(language, code) of each example block, in README order, set-up blocks (`make ...`) left out."""
    blocks = [(m.group(1), m.group(2)) for m in BLOCK.finditer(readme.read_text())]
    return [(lang, code) for lang, code in blocks if not re.search(r"^make ", code, re.M)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--limit", type=float, default=20.0, help="seconds an example may take (default 20)")
    args = ap.parse_args()
    failed = 0
    for i, (lang, code) in enumerate(examples(args.readme), 1):
        cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-c", code]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=args.limit * 3)
            status, out = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired:
            status, out = "timeout", ""
        took = time.monotonic() - t0
        ok = status == 0 and took <= args.limit
        failed += not ok
        first = code.strip().splitlines()[0][:70]
        print(f"example {i} ({lang}): {took:5.1f} s  exit {status}  {'ok' if ok else 'FAILED'}  | {first}")
        if status != 0:
            print("  " + "\n  ".join(out.strip().splitlines()[-8:]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
