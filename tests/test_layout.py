"""Layering rules of the package, as tests: no import cycle inside vaezoo, and a command line whose help
loads neither torch nor (in a runtime-only install) anything it does not have."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from helpers import blocking_env

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "vaezoo"
VAEZOO = Path(sys.executable).parent / "vaezoo"


def module_names() -> dict[str, Path]:
    """Every module of the vaezoo package: dotted name -> file (a package is its __init__)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the vaezoo modules it imports, at any depth of its code (imports inside functions count:
    a lazy import still closes a loop). ``from pkg import name`` points at ``pkg.name`` when that is a
    module, else at ``pkg``; a module's own package is not counted as an edge."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_known_loop_and_passes_a_known_chain():
    # controls: the measure must flag a loop (the old cli -> bench.cli -> bench.gradvar -> cli) and pass a chain
    loop = {"cli": {"bench.cli"}, "bench.cli": {"bench.gradvar"}, "bench.gradvar": {"cli", "core"}, "core": set()}
    assert cycles(loop) == [["bench.cli", "bench.gradvar", "cli"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_graph_sees_lazy_imports_inside_functions(tmp_path):
    modules = module_names()
    graph = import_graph(modules)
    # cli.bench loads the benchmarks lazily (by name, through importlib), so it has no edge to them, while
    # bench.main's import of bench.gradvar sits inside a function and still counts
    assert "vaezoo.bench.gradvar" in graph["vaezoo.bench.main"]
    assert len(modules) > 60


def test_no_import_cycle_inside_vaezoo():
    assert cycles(import_graph(module_names())) == []


def test_help_loads_no_torch_through_the_real_command(tmp_path):
    env = blocking_env(tmp_path, "torch")
    for args in (["--help"], ["train", "--help"], ["eval", "--help"], ["export", "--help"], ["pull", "--help"]):
        out = subprocess.run([str(VAEZOO), *args], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, (args, out.stderr)
        assert "Usage: vaezoo" in out.stdout
    # control: a command that needs torch does fail in that environment, so the block is real
    out = subprocess.run([str(VAEZOO), "models"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0 and "torch is not installed here" in out.stderr


def test_the_console_script_in_a_runtime_only_install_says_what_to_install(tmp_path):
    out = subprocess.run([str(VAEZOO), "--help"], capture_output=True, text=True, env=blocking_env(tmp_path, "click", "torch"),
                         timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1
    assert "vaezoo[train]" in out.stderr and "python -m vaezoo.runtime" in out.stderr
