"""Real prompt text sized to a target token count with the engine's tokenizer.

A workload call says how many tokens its full prompt has and, where the source has it, real text for the
new part (`CallSpec.prompt_text`). The replay turns that into a string the engine will tokenize into
(almost exactly) `prompt_tokens` tokens:

    prompt = history + "\\n\\n" + filler          (history = prefix call's prompt + its generated output)
    filler = the call's own text, then corpus text (real ShareGPT prompts and replies) until it is long enough

Sizing rule: the filler gets `target - count(history + sep)` tokens, so drift in the history (the engine's
output re-tokenized, special tokens dropped from the text) is absorbed by the new part. Decoding token ids
and re-encoding the text can merge tokens at a boundary, so the count is checked and the filler corrected
(exact in practice; at worst a token off). Invariant: `build()` is a pure function of its arguments and the
tokenizer, so every target of a run and every rerun with the same seed sends byte-identical prompts.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

SEPARATOR = "\n\n"
_ATTEMPTS = 3  # corpus offsets tried per prompt (two sizing passes each); one is almost always enough
_CORPUS_TOKENS = 400_000  # plenty of distinct filler; tokenizing it once costs well under a second


class Tokenizer(Protocol):
    """What the replay needs from a tokenizer: `tokenizers.Tokenizer` and the GPT-2 BPE both fit."""

    def encode(self, text: str) -> Any: ...  # returns an object with `.ids`

    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class TokenizerInfo:
    """A loaded tokenizer and where it came from (reported in the run's JSON)."""

    tokenizer: Tokenizer
    source: str


def load_tokenizer(spec: str | None) -> TokenizerInfo:
    """`spec`: a folder or file holding a Hugging Face `tokenizer.json`, or "gpt2" (shared/data's BPE).

    None means: the default model's tokenizer when it is prepared locally, else GPT-2."""
    if spec is None or spec == "default":
        from autellix.model import default_model_path, is_prepared

        path = default_model_path()
        spec = str(path) if is_prepared(path) else "gpt2"
    if spec == "gpt2":
        from autellix.workloads.data import tokenizer

        return TokenizerInfo(tokenizer(), "gpt2 (shared/data/tokenizer_gpt2)")
    path = Path(spec).expanduser()
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer.json at {spec}: pass a model folder, a tokenizer.json or "
                                "'gpt2'")
    from tokenizers import Tokenizer as HFTokenizer

    return TokenizerInfo(HFTokenizer.from_file(str(file)), str(file))


def local_tokenizer_for(model_root: str | None) -> str | None:
    """The tokenizer spec for a model an engine reports (vLLM's /v1/models `root` is the model path):
    the folder itself when it is on this machine, else None (caller falls back to the default)."""
    if model_root and (Path(model_root) / "tokenizer.json").is_file():
        return model_root
    return None


@lru_cache(maxsize=4)
def _corpus_ids(tok: Tokenizer) -> tuple[int, ...]:
    """Token ids of real text from shared/data (ShareGPT prompts and replies), cut at _CORPUS_TOKENS."""
    from autellix.workloads.data import data_file

    rows = json.loads(data_file("sharegpt", "ShareGPT_V3_filtered_500.json").read_text())
    ids: list[int] = []
    for row in rows:
        for turn in row.get("conversations", []):
            ids.extend(tok.encode(turn["value"] + SEPARATOR).ids)
        if len(ids) >= _CORPUS_TOKENS:
            break
    return tuple(ids[:_CORPUS_TOKENS])


def corpus_offset(key: str, corpus_len: int) -> int:
    """Deterministic start of a call's filler in the corpus (crc32: stable across processes, unlike hash)."""
    return zlib.crc32(key.encode()) % max(1, corpus_len)


class PromptBuilder:
    """Builds prompts of a given token count for one tokenizer (one per engine model)."""

    def __init__(self, info: TokenizerInfo) -> None:
        self.info = info
        self.tok = info.tokenizer
        self.corpus = _corpus_ids(info.tokenizer)

    def count(self, text: str) -> int:
        return len(self.tok.encode(text).ids) if text else 0

    def filler(self, n: int, seed_text: str | None, key: str) -> str:
        """About `n` tokens of text: `seed_text` first (cut if longer), then corpus text from `key`'s
        offset."""
        if n <= 0:
            return ""
        ids = list(self.tok.encode(seed_text).ids[:n]) if seed_text else []
        start = corpus_offset(key, len(self.corpus))
        while len(ids) < n:  # wrap around the corpus for very long prompts
            take = min(n - len(ids), len(self.corpus) - start)
            ids.extend(self.corpus[start:start + take])
            start = 0
        return self.tok.decode(ids)

    def build(self, history: str, target: int, seed_text: str | None, key: str) -> tuple[str, int]:
        """(prompt text, its token count) for a call whose full prompt should have `target` tokens.

        If the history alone is longer than the target (a clipped context), keep its most recent tokens:
        a sliding window, as chat applications do."""
        head = history + SEPARATOR if history else ""
        head_n = self.count(head)
        if head_n >= target:
            text = self.tok.decode(self.tok.encode(head).ids[head_n - target:]) if target > 0 else ""
            return text, self.count(text)
        best: tuple[int, str] | None = None
        # Decode/re-encode can merge tokens at a boundary: correct the filler length once; if the count
        # then oscillates around the target, move the corpus text (a new offset) and try again.
        for attempt in range(_ATTEMPTS):
            need = target - head_n
            for _ in range(2):
                text = head + self.filler(need, seed_text, key if attempt == 0 else f"{key}#{attempt}")
                n = self.count(text)
                if best is None or abs(n - target) < abs(best[0] - target):
                    best = (n, text)
                if n == target or need + target - n < 0:
                    break
                need += target - n
            if best[0] == target:
                break
        assert best is not None
        return best[1], best[0]
