"""Where the real agent data lives, and the GPT-2 tokenizer used to count its tokens.

Layout: the repository sits at <root>/main and the data at <root>/shared/data, so the default is
`<repo>/../shared/data`; CI clones the repo elsewhere with a copy of shared/ beside it, which resolves the
same way. `AUTELLIX_DATA_DIR` overrides it. Parsed data is cached per process (lru_cache), so only the
first generation of a workload pays for reading and tokenising files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

ENV_VAR = "AUTELLIX_DATA_DIR"
_REPO = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The shared data folder; a clear FileNotFoundError if it is missing."""
    env = os.environ.get(ENV_VAR)
    path = Path(env).expanduser() if env else _REPO.parent / "shared" / "data"
    if not path.is_dir():
        how = f"${ENV_VAR}={env}" if env else f"default <repo>/../shared/data (repo {_REPO})"
        raise FileNotFoundError(
            f"agent data folder not found at {path} ({how}); put shared/data beside the repository "
            f"or set {ENV_VAR} to its path"
        )
    return path


def data_file(*parts: str) -> Path:
    """A file inside the data folder; FileNotFoundError naming it when absent."""
    path = data_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"agent data file missing: {path}")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """JSON lines (BFCL's `.json` files are JSONL too); blank lines skipped."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


@lru_cache(maxsize=1)
def tokenizer() -> Any:
    """GPT-2 byte-level BPE (50,257 tokens) from shared/data/tokenizer_gpt2."""
    try:
        from tokenizers import ByteLevelBPETokenizer
    except ImportError as e:  # a declared dependency; say how to get it
        raise ImportError("the `tokenizers` package is needed to count tokens: pip install tokenizers") from e
    return ByteLevelBPETokenizer.from_file(
        str(data_file("tokenizer_gpt2", "encoder.json")), str(data_file("tokenizer_gpt2", "vocab.bpe"))
    )


def count_tokens(texts: Sequence[str]) -> list[int]:
    """GPT-2 token count of each text (batched: the tokenizer runs in parallel in Rust)."""
    if not texts:
        return []
    return [len(e.ids) for e in tokenizer().encode_batch(list(texts))]
