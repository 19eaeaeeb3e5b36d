"""The package's layering (edgedistill/__init__.py draws it): imports run one way, from the command line
down to the engine, and no module imports itself back through others.

Every import counts, at the top of a module or inside a function (a function-local import is still a
dependency), and so does importlib.import_module / __import__ of a literal name. Imports under
``if TYPE_CHECKING:`` (only annotations see them) count for the layering, not for circles, and may go up
only where TYPING_UP allows it and says why."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgedistill"

# Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS = ("core", "runtime", "quantization", "models", "data", "training", "release", "stages", "pipeline", "sweep", "cli")
MAX_LINES = 400

# (importing layer, imported module) pairs allowed under TYPE_CHECKING only, with the reason.
TYPING_UP = {
    ("stages", "edgedistill.pipeline"): "a stage's configure(p) reads the pipeline that composes the stages' configs",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    """The layer index of an edgedistill module; None for the package root and __main__ (entry points)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] == "__main__":
        return None
    return LAYERS.index(parts[1])


def _type_checking_only(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(path: Path, module: str | None = None, typing: bool = False) -> set[str]:
    """The edgedistill modules a file (module: its name, default from its path) imports, absolute or relative,
    at any depth; those under TYPE_CHECKING instead when typing. Raises AssertionError for an edgedistill
    module imported by a name computed at run time (an f-string given to importlib.import_module), which
    no check could follow. (A computed name of another package, as `python:<module>` presets give, is
    not ours to check.)"""
    module = module or module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST, in_typing: bool = False) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, in_typing)
            return
        if in_typing != typing:
            for child in ast.iter_child_nodes(node):
                visit(child, in_typing)
            return
        if isinstance(node, ast.Call) and _dynamic_import(node) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.split(".")[0] == "edgedistill":
                found.add(arg.value)
            head = arg.values[0] if isinstance(arg, ast.JoinedStr) and arg.values else None
            assert not (isinstance(head, ast.Constant) and str(head.value).startswith("edgedistill")), (
                f"{module}: line {node.lineno} imports an edgedistill module by a computed name; import it by name")
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "edgedistill")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "edgedistill":
                for a in node.names:  # `from edgedistill.data import image` imports the module data.image
                    sub = f"{target}.{a.name}"
                    found.add(sub if _is_module(sub) else target)
        for child in ast.iter_child_nodes(node):
            visit(child, in_typing)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(module)
    return found


def _dynamic_import(call: ast.Call) -> bool:
    f = call.func
    return (isinstance(f, ast.Name) and f.id in ("__import__", "import_module")) or (
        isinstance(f, ast.Attribute) and f.attr == "import_module")


def _is_module(name: str) -> bool:
    p = PACKAGE.parent.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def import_graph(typing: bool = False) -> dict[str, set[str]]:
    return {module_name(p): imports_of(p, typing=typing) for p in sorted(PACKAGE.rglob("*.py"))}


def upward_imports(graph: dict[str, set[str]], allowed: dict | None = None) -> list[str]:
    bad = []
    for module, targets in graph.items():
        low = layer_of(module)
        for target in sorted(targets):
            if target == "edgedistill":
                bad.append(f"{module} imports the package root; import the module it needs")
                continue
            high = layer_of(target)
            if low is not None and high is not None and high > low and (LAYERS[low], target) not in (allowed or {}):
                bad.append(f"{module} ({LAYERS[low]}) imports {target} ({LAYERS[high]})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles, each once (Tarjan's strongly connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                strongconnect(w)
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
            strongconnect(v)
    return found


def test_every_module_is_in_a_layer():
    for module in import_graph():
        parts = module.split(".")
        assert len(parts) == 1 or parts[1] in LAYERS + ("__main__",), f"{module} is in no layer of {LAYERS}"


def test_imports_run_down_the_layers():
    assert upward_imports(import_graph()) == []


def test_annotations_only_go_up_where_allowed():
    assert upward_imports(import_graph(typing=True), TYPING_UP) == []


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_the_checks_catch_what_they_claim(tmp_path):
    """The checker itself: an upward import and a circle in a made-up graph are found."""
    graph = {"edgedistill.core.store": {"edgedistill.stages.export"}, "edgedistill.stages.export": {"edgedistill.core.store"},
             "edgedistill.data.image": {"edgedistill.core.errors"}, "edgedistill.core.errors": set()}
    assert upward_imports(graph) == ["edgedistill.core.store (core) imports edgedistill.stages.export (stages)"]
    assert cycles(graph) == [["edgedistill.core.store", "edgedistill.stages.export"]]
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edgedistill.pipeline import Pipeline\n"
                      "def f():\n    from edgedistill.stages import export\n"
                      "    importlib.import_module('edgedistill.cli')\n")
    assert imports_of(source, "edgedistill.core.probe") == {"edgedistill.stages.export", "edgedistill.cli"}
    assert imports_of(source, "edgedistill.core.probe", typing=True) == {"edgedistill.pipeline"}
    assert upward_imports({"edgedistill.data.config": {"edgedistill.pipeline"}}, TYPING_UP) == [
        "edgedistill.data.config (data) imports edgedistill.pipeline (pipeline)"]
    assert upward_imports({"edgedistill.stages.qat": {"edgedistill.pipeline"}}, TYPING_UP) == []
    computed = tmp_path / "c.py"
    computed.write_text("import importlib\nfor m in ('image', 'text'):\n    importlib.import_module(f'edgedistill.data.{m}')\n")
    with pytest.raises(AssertionError, match="computed name"):
        imports_of(computed, "edgedistill.data.probe")


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_long_modules_say_why(path):
    """A module over MAX_LINES lines states at its top why it stays whole ("Why one module: ..."; bench.py,
    which ships byte for byte in every bundle, says "over 400 lines on purpose: ...")."""
    text = path.read_text()
    if len(text.splitlines()) > MAX_LINES:
        doc = ast.get_docstring(ast.parse(text)) or ""
        assert re.search(r"Why one module:|over 400 lines on purpose:", doc), (
            f"{path.relative_to(PACKAGE)} has {len(text.splitlines())} lines and no reason")


@pytest.mark.parametrize("package", ["edgedistill.models", "edgedistill.data"])
def test_public_surfaces_export_what_they_list(package):
    """Scripts import from the package (`from edgedistill.data import decode_image`): every name it lists is there."""
    import importlib

    module = importlib.import_module(package)
    assert module.__all__ and all(hasattr(module, name) for name in module.__all__)
