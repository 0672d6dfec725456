"""The package's layers (docs/architecture.md): every import in cllm/ points down, and no module imports itself back.

Each module's imports are read from its source with ``ast`` (module-level and function-level alike: a lazy import
is still a dependency), resolved to the cllm module they name, and checked against LAYERS: a module may import from
its own subpackage and from any lower row; modules in the same row are siblings and never import each other.
"""

import ast
from pathlib import Path

import pytest

import cllm

PACKAGE = Path(cllm.__file__).parent

# Lowest first. A row's entries are siblings.
LAYERS = [
    ["cllm._version", "cllm.runtime"],       # pure Python helpers: threads, atomic files, signals, checks
    ["cllm._core"],                          # the compiled extension modules
    ["cllm.kernels"],                        # the CPU backend: the one door to the kernels
    ["cllm.corpus", "cllm.formats"],         # stages 1-2; the .cllm container (knows no model)
    ["cllm.tokenizer"],                      # stage 3
    ["cllm.model", "cllm.optim"],            # the model (and its files), the optimizers
    ["cllm.evaluate", "cllm.interop"],       # held-out metrics, completion, the bench report; other formats
    ["cllm.train"],                          # stage 4
    ["cllm.pipeline"],                       # every stage in order
    ["cllm.cli"],                            # the command line
    ["cllm", "cllm.__main__"],               # the public API
]


def module_name(path: Path) -> str:
    parts = ("cllm",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """A module or package of cllm with Python source (or a compiled module of cllm._core)."""
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()
            or (name.startswith("cllm._core.") and any(path.parent.glob(path.name + ".*"))))


def imports(source: str, name: str, is_package: bool = False) -> set[str]:
    """The cllm modules that module ``name``, whose text is ``source``, imports."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "cllm"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "cllm":
                continue
            for alias in node.names:  # `from cllm.x import y`: module cllm.x.y if there is one, else cllm.x
                found.add(f"{source}.{alias.name}" if is_module(f"{source}.{alias.name}") else source)
    return found - {name}


def layer_of(name: str) -> tuple[int, str]:
    """(row, the LAYERS entry) of a module: the longest entry that is the module or a package above it."""
    best = None
    for row, entries in enumerate(LAYERS):
        for entry in entries:
            if (name == entry or name.startswith(entry + ".")) and (best is None or len(entry) > len(best[1])):
                best = (row, entry)
    assert best is not None, f"{name} is in no layer of tests/test_architecture.py's LAYERS"
    return best


GRAPH = {module_name(p): imports(p.read_text(encoding="utf-8"), module_name(p), p.name == "__init__.py")
         for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    for name in GRAPH:
        layer_of(name)


def test_imports_point_down():
    upward = []
    for name, targets in GRAPH.items():
        row, entry = layer_of(name)
        for target in sorted(targets):
            t_row, t_entry = layer_of(target)
            if t_entry != entry and t_row >= row:
                upward.append(f"{name} (layer {row}, {entry}) imports {target} (layer {t_row}, {t_entry})")
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


def test_no_import_cycles():
    """No module reaches itself through the imports (Tarjan's strongly connected components)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
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
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("source, bad", [
    ("from ..train import train\n", "cllm.model.language_model (layer 5, cllm.model) imports cllm.train"),  # upward
    ("def f():\n    from ..optim import AdamW\n",  # sibling
     "cllm.model.language_model (layer 5, cllm.model) imports cllm.optim"),
    ("from cllm.cli import main\n", "cllm.model.language_model (layer 5, cllm.model) imports cllm.cli"),
])
def test_the_checker_catches_upward_and_sibling_imports(monkeypatch, source, bad):
    name = "cllm.model.language_model"
    monkeypatch.setitem(GRAPH, name, GRAPH[name] | imports(source, name))
    with pytest.raises(AssertionError, match=bad.replace("(", r"\(").replace(")", r"\)")):
        test_imports_point_down()


def test_the_checker_resolves_relative_imports():
    assert imports("from . import checkpoint\nfrom .. import kernels as K\nfrom ..runtime.threads import x\n",
                   "cllm.model.language_model") == {"cllm.model.checkpoint", "cllm.kernels", "cllm.runtime.threads"}
    assert imports("from .linear import PANEL\n", "cllm.kernels", is_package=True) == {"cllm.kernels.linear"}
