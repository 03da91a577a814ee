"""The package's shape: no import cycles, and the model loads no engine at import time."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import layerflow

PACKAGE = Path(layerflow.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The layerflow modules ``path`` imports (TYPE_CHECKING ones included: they show
    where a concept lives), resolved to module names."""
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("layerflow")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("layerflow"):
                continue
            found.add(target)
            for a in node.names:  # `from . import dask` names a module
                if (PACKAGE.parent / (target + "." + a.name).replace(".", "/")).exists() or (
                    PACKAGE.parent / ((target + "." + a.name).replace(".", "/") + ".py")
                ).exists():
                    found.add(f"{target}.{a.name}")
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # a package's __init__ re-exports its modules; importing them from it is no cycle
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycles():
    graph = _graph()
    # a package imports its own modules to re-export them; its modules import each
    # other, never the package itself
    for name in list(graph):
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert _cycles(graph) == []


def test_the_model_does_not_load_the_engine_or_the_store_at_import_time():
    model = [PACKAGE / "flow.py", PACKAGE / "plan.py", PACKAGE / "prediction.py"]
    model += sorted((PACKAGE / "graph").glob("*.py"))
    for path in model:
        imported = _imports(path, top_level_only=True)
        assert not {
            m
            for m in imported
            if m.startswith(("layerflow.scheduler", "layerflow.store", "layerflow.recorder"))
        }, path.name


def test_the_engine_does_not_know_the_yaml_loader():
    for path in (PACKAGE / "scheduler").glob("*.py"):
        assert "layerflow.pipeline" not in _imports(path), path.name


def test_the_engine_imports_no_backend_module():
    # backends meet the engine through backends/__init__.py's interface only; what is
    # particular to one (a Dask cluster keeping values) lives in its own modules
    for path in (PACKAGE / "scheduler").glob("*.py"):
        imported = _imports(path)
        assert not {m for m in imported if m.startswith("layerflow.backends.")}, path.name
        assert "distributed" not in path.read_text(), path.name


def test_the_engine_asks_a_backend_what_it_can_do_instead_of_its_name():
    # what a pool can do (begin late, be interrupted, keep values, have slots) is asked of
    # its backend (backends.Backend); only the state names the kinds, and the engine's own
    # pools (its threads, the calling thread, the event loop it drives) may be named
    for path in (PACKAGE / "scheduler").glob("*.py"):
        if path.name in ("state.py", "pools.py"):  # the kinds; address= belongs to Dask
            continue
        found = re.findall(r"\b_(?:DASK|PROCESS)\b", path.read_text())
        assert not found, f"{path.name} names a backend's kind: {found}"
    pools = (PACKAGE / "scheduler" / "pools.py").read_text()
    assert len(re.findall(r"\b_(?:DASK|PROCESS)\b", pools)) == 2  # imported, address=


def test_no_scheduler_module_is_long():
    for path in (PACKAGE / "scheduler").glob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= 450, f"{path.name} has {lines} lines"


def test_backends_are_imported_only_when_a_run_uses_them():
    import subprocess
    import sys

    code = (
        "import sys, layerflow as lf\n"
        "f = lf.Flow()\n"
        "f.add(lambda: 1, name='a')\n"
        "assert f.run()['a'] == 1\n"
        "print(sorted(m for m in sys.modules if m.startswith('layerflow.backends.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_optional_backend_says_how_to_install_it(monkeypatch):
    from layerflow import backends

    monkeypatch.setitem(backends._REGISTRY, "dask", ("no_such_module_here:Backend", "dask"))
    flow = layerflow.Flow()
    flow.add(lambda: 1, name="a")
    try:
        flow.run(backend="dask")
    except layerflow.LayerflowError as e:
        assert "Backend 'dask' is not available" in str(e)
        # from a clone (as here) the command installs from the clone, else from the index
        assert f"Install it with: {backends.install_command('dask')}" in str(e)
        assert backends.install_command("dask").startswith("pip install -e '")
    else:
        raise AssertionError("no error")


def test_make_demo_installs_only_the_package():
    # the demo runs one YAML file: it must not pull in the test and benchmark stack
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    demo = re.search(r"^demo: *(\S+)$", makefile, re.M)
    assert demo is not None, "no demo target"
    stamp = demo.group(1).replace("$(", r"\$\(").replace(")", r"\)")
    recipe = re.search(rf"^{stamp}:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe is not None, demo.group(1)
    installs = [line for line in recipe.group(1).splitlines() if "pip install" in line]
    assert installs and all("[" not in line for line in installs), installs


def test_the_command_line_writes_only_through_its_presenter():
    """Every line for a person goes through cli/present.py, which owns the streams' rules
    (--json, -q, warning:/error:): no other CLI module writes on its own."""
    writes = re.compile(r"\bclick\.(echo|secho|confirm|prompt)\b|\bprint\(|\bsys\.std(out|err)\b")
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted((PACKAGE / "cli").glob("*.py"))
        if path.name != "present.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if writes.search(line)
    ]
    assert found == []
