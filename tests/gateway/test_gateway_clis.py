"""The real agent CLIs, unmodified, through the gateway: Claude Code (`claude -p`, the Messages API)
and Codex (`codex exec`, the Responses API), installed by `make test` (the Makefile's `clients` step)
into .npm-clients/ at pinned versions, run offline (no telemetry, updates or login; every non-loopback
connection goes to a dead proxy), against FAKE: a scripted engine (scripted_engine.py), because their
system prompts exceed the default model's context. Missing CLIs fail the test; nothing is skipped.

Each run must be exactly one program in `GET /v1/programs` holding all its model calls, a Claude Code
subagent a thread of it whose parent is the main thread; two concurrent runs are two programs."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_engine import ServerThread
from scripted_engine import ScriptedEngine

from autellix.gateway import GatewayConfig, create_app

BIN = Path(__file__).resolve().parents[2] / ".npm-clients" / "node_modules" / ".bin"
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "127.0.0.1,localhost", "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1",
           "DISABLE_ERROR_REPORTING": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "IS_SANDBOX": "1"}  # Claude Code refuses to skip permissions as root outside a declared sandbox


@pytest.fixture(scope="module")
def gateway() -> Any:
    for cli in ("claude", "codex"):
        assert (BIN / cli).exists(), f"{BIN / cli} missing: run `make clients` (part of `make test`)"
    engine = ScriptedEngine()
    engine_server = ServerThread(engine.app).start()
    app = create_app(GatewayConfig(engines=(engine_server.url,), health_interval=0.5))
    gw = ServerThread(app).start()
    yield engine, gw
    gw.stop()
    engine_server.stop()


def _programs(url: str) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in httpx.get(url + "/v1/programs", params={"limit": 1000}).json()["data"]}


def _run(argv: list[str], home: Path, env: dict[str, str]) -> str:
    home.mkdir(parents=True, exist_ok=True)
    full = {"PATH": os.environ["PATH"], "HOME": str(home), **OFFLINE, **env}
    done = subprocess.run(argv, cwd=home, env=full, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def _session_calls(engine: ScriptedEngine, header: str, session: str, path: str) -> int:
    return sum(r["path"] == path and r["headers"].get(header) == session for r in engine.requests)


def _two_runs_are_two_programs(run: Any, url: str, before: dict[str, Any]) -> list[dict[str, Any]]:
    """Two concurrent runs of a CLI (`run(i)` returns its output) finish their scripted loop and are
    exactly two new programs; returns their entries."""
    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(run, range(2)))
    assert all("All done." in out for out in outputs), outputs
    made = [p for pid, p in _programs(url).items() if pid not in before]
    assert len(made) == 2, made
    return made


def test_claude_code_runs_are_programs_with_subagent_threads(gateway: Any, tmp_path: Path) -> None:
    engine, gw = gateway
    before = _programs(gw.url)

    def run(i: int) -> str:
        return _run([str(BIN / "claude"), "-p", "Check the folder, then print a word.", "--model",
                     "claude-opus-4-5", "--dangerously-skip-permissions"], tmp_path / f"claude{i}",
                    {"ANTHROPIC_BASE_URL": gw.url, "ANTHROPIC_API_KEY": "sk-local"})

    for p in _two_runs_are_two_programs(run, gw.url, before):
        calls = _session_calls(engine, "x-claude-code-session-id", p["id"], "/v1/messages")
        assert p["source"] == "claude-code" and p["completed_calls"] == calls >= 4, p
        subagents = [t for t in p["threads"] if t != "0"]
        assert subagents and all(p["thread_parents"][t] == "0" for t in subagents), p


def test_codex_runs_are_programs(gateway: Any, tmp_path: Path) -> None:
    engine, gw = gateway
    before = _programs(gw.url)

    def run(i: int) -> str:
        home = tmp_path / f"codex{i}"
        (home / ".codex").mkdir(parents=True)
        (home / ".codex" / "config.toml").write_text(
            'model = "gpt-5-codex"\nmodel_provider = "autellix"\ncheck_for_update_on_startup = false\n'
            '[analytics]\nenabled = false\n[model_providers.autellix]\nname = "autellix"\n'
            f'base_url = "{gw.url}/v1"\nwire_api = "responses"\nenv_key = "AUTELLIX_KEY"\n')
        return _run([str(BIN / "codex"), "exec", "--skip-git-repo-check",
                     "--dangerously-bypass-approvals-and-sandbox", "Print a word."], home,
                    {"AUTELLIX_KEY": "sk-local", "CODEX_HOME": str(home / ".codex")})

    for p in _two_runs_are_two_programs(run, gw.url, before):
        calls = _session_calls(engine, "session-id", p["id"], "/v1/responses")
        assert p["source"] == "codex" and p["completed_calls"] == calls >= 2, p
