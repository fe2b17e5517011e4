"""The import graph of comp/, read from the source with `ast` (nothing is imported): no cycles, no import against the
layer order of DEVELOPERS.md ("The map"). Top-level and function-level imports (and TYPE_CHECKING ones) all count:
a dependency is a dependency whenever it runs.

LAYERS below is the one copy of the layer table in code; keep it equal to the table in DEVELOPERS.md. A module may
import from its own layer or lower ones. Between two rooms of the same layer an import is allowed only while the
rooms stay acyclic. A new room (a new subpackage or top-level module) must get a layer here first.
"""

from __future__ import annotations

import ast
import functools
import importlib
from collections.abc import Iterable
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "comp"

# room -> layer, lowest first. A room is a subpackage of comp/ or a top-level module of it.
LAYERS: dict[str, int] = {
    "comp": 0,  # the package root: __version__ and the lazy library API (imports nothing at import time)
    "core": 0,  # config, workspace, atomic, provenance, errors, progress, metrics, device
    "vision": 1,  # images, augment, tta
    "kinds": 1,  # the submission kinds: detect, encode, decode, check, fix, targets (needs only core)
    "setup": 2,  # scan, formats, items (train_items/test_items), discover, init, verify
    "folds": 2,
    "modeling": 3,  # recipe, models (data_config)
    "runs": 3,
    "logits": 3,
    "training": 4,  # runtime, loop, train, checkpoint
    "predict": 4,
    "submission": 5,  # parse, write, check, warnings
    "ensemble": 5,  # blend, stack
    "platforms": 6,  # base, submit, kaggle, kaggle_code, codabench, fetch
    "report": 6,
    "demo": 6,
    "bundle": 6,  # a code-competition kernel: predict + ensemble + submission, offline (issue 12)
    "cli": 7,
    "__main__": 7,
}
# Same-layer imports that are forbidden even though they would be acyclic.
FORBIDDEN: set[tuple[str, str]] = {
    ("predict", "training"),  # inference never depends on training: both meet at modeling/, runs, logits
    ("submission", "ensemble"),  # the second narrow waist: ensemble writes submissions, never the other way
}

# Room-level cycles (module-level acyclic) known and accepted for now, with the way out. The test fails when one of
# them is gone, so this list only shrinks.
KNOWN_ROOM_CYCLES: dict[tuple[str, ...], str] = {}


# ---------------------------------------------------------------------------------------------------------------
# The checker (pure functions of a package folder, so the tests below can also run it on planted packages)


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package folder `root`."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _lazy_names(init: Path) -> dict[str, str]:
    """`from PKG import name` where the root __init__ serves `name` lazily: {name: module} from its `_LAZY` dict."""
    if not init.exists():
        return {}
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets) and isinstance(node.value, ast.Dict):
            return {ast.literal_eval(k): ast.literal_eval(v) for k, v in zip(node.value.keys, node.value.values,
                                                                            strict=True)}
    return {}


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in the file). `from pkg.sub import name` points at the
    submodule `pkg.sub.name` when it exists, else at `pkg.sub`; names of the root's lazy API point at their module.
    The implicit import of a module's parent packages is not an edge (Python runs them, but only as containers)."""
    mods = modules(root)
    pkg = root.name
    lazy = {f"{pkg}.{name}": module for name, module in _lazy_names(root / "__init__.py").items()}

    def resolve(name: str) -> str | None:
        name = lazy.get(name, name)
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] != pkg:
                    continue
                found = resolve(target)
                if found and found != module:
                    graph[module].add(found)
    return graph


def room(module: str) -> str:
    """comp.setup.verify -> setup; comp.folds -> folds; comp -> comp."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        rooms.setdefault(room(module), set()).update(room(t) for t in targets if room(t) != room(module))
    return rooms


def layer_problems(graph: dict[str, set[str]], layers: dict[str, int],
                   forbidden: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Every import against the layer order, every forbidden edge and every room without a layer, as sentences."""
    problems = [f"{module}: room {room(module)!r} has no layer; add it to LAYERS and to DEVELOPERS.md"
                for module in sorted(graph) if room(module) not in layers]
    forbidden = set(forbidden)
    for module in sorted(graph):
        for target in sorted(graph[module]):
            a, b = room(module), room(target)
            if a not in layers or b not in layers:
                continue
            if layers[b] > layers[a]:
                problems.append(f"{module} (layer {layers[a]}, {a}) imports {target} (layer {layers[b]}, {b}): "
                                "a lower layer must not import a higher one")
            elif (a, b) in forbidden:
                problems.append(f"{module} imports {target}: {a} must not import {b}")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# comp/ itself


@functools.cache
def comp_graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE)


def test_the_package_has_no_import_cycles():
    graph = comp_graph()
    assert len(graph) > 40, "the walk found too few modules: is PACKAGE right?"
    assert cycles(graph) == []


def test_no_import_goes_against_the_layer_order():
    assert layer_problems(comp_graph(), LAYERS, FORBIDDEN) == []


def test_rooms_of_one_layer_import_each_other_without_cycles():
    found = {tuple(c) for c in cycles(room_graph(comp_graph()))}
    assert found - set(KNOWN_ROOM_CYCLES) == set()
    assert set(KNOWN_ROOM_CYCLES) - found == set(), "a known room cycle is gone: drop it from KNOWN_ROOM_CYCLES"


def test_the_layer_table_lists_only_rooms_that_exist():
    rooms = {room(m) for m in modules(PACKAGE)}
    assert set(LAYERS) - rooms == set(), "LAYERS names a room that is gone: drop it here and in DEVELOPERS.md"


def test_developers_md_shows_the_same_layers():
    """The layer table in DEVELOPERS.md names every room with the layer LAYERS gives it."""
    text = (PACKAGE.parent / "DEVELOPERS.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and cells[0].isdigit():
            for name in cells[1].replace("`", "").replace(",", " ").split():
                rows[name.strip("/").removesuffix(".py")] = int(cells[0])
    expected = {r: n for r, n in LAYERS.items() if r not in ("comp", "__main__")}
    assert {r: rows.get(r) for r in expected} == expected


# ---------------------------------------------------------------------------------------------------------------
# The checker can fail: planted packages


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for name, text in files.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return pkg


TOY_LAYERS = {"pkg": 0, "low": 0, "mid": 1, "high": 2}


def test_the_checker_sees_a_wrong_way_import_inside_a_function(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/base.py": "def f():\n    from pkg.high.top import g\n    return g\n",
        "mid.py": "from pkg.low import base\n",
        "high/__init__.py": "",
        "high/top.py": "def g():\n    return 1\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.low.base"] == {"pkg.high.top"}
    assert graph["pkg.mid"] == {"pkg.low.base"}
    problems = layer_problems(graph, TOY_LAYERS)
    assert len(problems) == 1 and "pkg.low.base (layer 0, low) imports pkg.high.top (layer 2, high)" in problems[0]
    assert cycles(graph) == []


def test_the_checker_sees_a_cycle_through_relative_and_package_imports(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "mid.py": "from .high import helper\n",  # a name of pkg/high/__init__.py: an edge to the package
        "high/__init__.py": "from pkg.high.top import helper\n",
        "high/top.py": "import pkg.mid as m\n\ndef helper():\n    return m\n",
    })
    graph = import_graph(pkg)
    assert cycles(graph) == [["pkg.high", "pkg.high.top", "pkg.mid"]]
    assert layer_problems(graph, TOY_LAYERS)[0].startswith("pkg.mid (layer 1, mid) imports pkg.high (layer 2, high)")


def test_the_checker_sees_a_room_cycle_and_a_forbidden_edge(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "from pkg import other\n",
        "low/b.py": "",
        "other.py": "from pkg.low import b\n",
    })
    graph = import_graph(pkg)
    assert cycles(graph) == []  # module-level acyclic ...
    assert cycles(room_graph(graph)) == [["low", "other"]]  # ... but the two rooms depend on each other
    layers = {"pkg": 0, "low": 0, "other": 0}
    assert layer_problems(graph, layers, {("low", "other")}) == ["pkg.low.a imports pkg.other: low must not import "
                                                                 "other"]
    assert layer_problems(graph, {"pkg": 0, "low": 0})[0].startswith("pkg.other: room 'other' has no layer")


def test_names_of_the_lazy_api_resolve_to_their_module(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": '_LAZY = {"train": "pkg.high.top"}\n',
        "low.py": "from pkg import train\n",
        "high/__init__.py": "",
        "high/top.py": "def train():\n    pass\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.low"] == {"pkg.high.top"}
    assert layer_problems(graph, TOY_LAYERS) != []



# ---------------------------------------------------------------------------------------------------------------
# The library API (comp/__init__.py): lazy, complete, and every name real


def test_every_name_of_the_library_api_resolves():
    import comp

    assert comp.__all__[0] == "__version__" and len(comp.__all__) > 20
    for name in comp.__all__:
        value = getattr(comp, name)
        assert value is not None, name
        if name != "__version__":
            module = importlib.import_module(comp._LAZY[name])
            assert value is getattr(module, comp._RENAMED.get(name, name)), name
    assert set(dir(comp)) >= set(comp.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        comp.nonsense  # noqa: B018


def test_the_api_covers_every_library_function_the_cli_calls():
    """Each `from comp.X import f` of a function inside a CLI command is exported (private helpers aside)."""
    import comp

    exported = {(comp._LAZY[n], comp._RENAMED.get(n, n)) for n in comp._LAZY}
    known = modules(PACKAGE)
    called = set()
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        as_module = {}  # `from comp.platforms import submit as platforms`: platforms.submit_file(...) is a call
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("comp.") \
                    or node.module.startswith("comp.cli"):
                continue
            for alias in node.names:
                if f"{node.module}.{alias.name}" in known:
                    as_module[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                elif alias.name[0].islower():
                    called.add((node.module, alias.name))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in as_module:
                called.add((as_module[node.func.value.id], node.func.attr))
    assert {c for c in called if c[1] not in CLI_ONLY} - exported == set()


# Functions the CLI imports that are not library stages: presentation, or the process's own start time (what
# `comp train --budget` counts from; a library caller passes `started` itself).
CLI_ONLY = {"preview_mapping", "process_started"}


def test_the_api_names_shadow_no_module_and_import_nothing_eagerly():
    import comp

    top_level = {room(m) for m in modules(PACKAGE)}
    assert set(comp._LAZY) & top_level == set()  # `from comp import report` would flip between module and function
    assert comp_graph()["comp"] == set()
    assert all(module in modules(PACKAGE) for module in comp._LAZY.values())



@pytest.mark.slow  # two Python processes
def test_commands_import_only_the_heavy_libraries_they_use():
    """Each import is seconds of a CPU core that a short `comp train --budget` (and the stack after it) pays: reading
    recipes, runs and logits (stack, status) needs no torch, and training needs no sklearn unless a metric or
    pseudo-labels ask for it."""
    import subprocess
    import sys

    def loaded(*modules: str) -> set[str]:
        code = (f"import sys, {', '.join(modules)}; print(' '.join(m for m in ('torch', 'timm', 'sklearn') "
                f"if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        return set(out.split())

    assert loaded("comp.runs", "comp.ensemble.stack") == {"sklearn"}  # its blends are sklearn's; no torch
    assert loaded("comp.cli.training", "comp.training.train") == {"torch", "timm"}
