"""The package's import structure (docs/architecture.md): imports run one way, and the policy core imports
no engine or HTTP library. Every import counts: module level, inside functions, under TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "autellix"
CORE = ("autellix.programs", "autellix.context", "autellix.balance", "autellix.policy")
"""The policy core: pure Python, shared by the plugin, the gateway and the simulator."""
LAYERS = {
    "autellix.programs": 0,
    "autellix.context": 1, "autellix.policy": 1, "autellix.balance": 1, "autellix.metrics": 1,
    "autellix.workloads": 1, "autellix.model": 1, "autellix.client": 1,
    "autellix.report": 2, "autellix.engine": 2, "autellix.gateway": 2,
    "autellix.sim": 3,
    "autellix.bench": 4, "autellix.deploy": 4,
    "autellix.cli": 5, "autellix": 5,
}
"""docs/architecture.md's layers: a module imports only from lower layers (or inside its own package)."""
CORE_FORBIDDEN = ("vllm", "torch", "starlette", "uvicorn", "aiohttp", "httpx", "ray", "autellix.sim",
                  "autellix.gateway", "autellix.engine", "autellix.bench", "autellix.deploy")


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imported(name: str, path: Path) -> set[str]:
    """Every module name `name` imports, relative imports resolved, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (`from a import b` counts as a.b when that is a module);
    an import of one's own parent package is not an edge (a package's __init__ re-exports its children)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for target in _imported(m, path):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != m and not m.startswith(target + "."):
                graph[m].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package():
    assert cycles(import_graph()) == []


def _group(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_imports_run_down_the_layers_of_the_architecture_doc():
    graph = import_graph()
    assert {_group(m) for m in graph} == set(LAYERS), "a top-level module is missing from LAYERS"
    upward = sorted((a, b) for a, targets in graph.items() for b in targets
                    if _group(a) != _group(b) and LAYERS[_group(a)] <= LAYERS[_group(b)])
    assert not upward, f"imports against the layers: {upward}"


def test_the_policy_core_imports_no_engine_http_or_outer_layer():
    mods = _modules()
    for m, path in mods.items():
        if not m.startswith(CORE):
            continue
        bad = sorted(t for t in _imported(m, path) if t.startswith(CORE_FORBIDDEN))
        assert not bad, f"{m} imports {bad}"


def test_the_architecture_doc_names_every_module():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    missing = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if p.name != "__init__.py" and p.stem not in doc)
    assert not missing, f"docs/architecture.md's module map lacks {missing}"
