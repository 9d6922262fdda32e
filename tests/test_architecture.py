"""The import rule that keeps stages apart, checked on the source with ``ast``.

A stage package (simulate, deface, preprocess, model, analysis, report) imports only the
shared layers (io, layout, conditions, imaging, engine, config) and itself, never a sibling
stage; analysis may also use model's small loading and inference API. The shared layers
import no stage. No two files import each other, directly or around a loop. Imports inside
functions count: hiding an arrow in a function does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "defacebench"
STAGES = ("simulate", "deface", "preprocess", "privacy", "model", "analysis", "report", "export")
SHARED = ("io", "layout", "conditions", "imaging", "engine", "config")
#: What a stage may import besides the shared layers and itself.
EXCEPTIONS = {"analysis": ("model.inference",)}
MAX_LINES = 400


def module_files(root: Path = SRC) -> dict[str, Path]:
    """``defacebench.x.y`` -> its file, for every module of the package."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's own modules a file imports (anywhere in it), resolved to module names.

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: {m for m in imported_modules(name, path, modules) if m in modules and m != name} for name, path in modules.items()}


def top(module: str) -> str:
    """``defacebench.model.accel.fast`` -> ``model``; ``defacebench`` -> ``""``."""
    return module.split(".")[1] if "." in module else ""


def rule_violations(graph: dict[str, set[str]]) -> list[str]:
    """``"importer -> imported"`` for every import the rule forbids."""
    bad = []
    for module, targets in sorted(graph.items()):
        home = top(module)
        if home not in STAGES and home not in SHARED:
            continue  # commands/, cli.py, study.py, cohort.py may import anything
        allowed = {"", home, *SHARED}  # shared layers import each other (cycles are checked apart)
        for target in sorted(targets):
            excepted = any(target == f"{PACKAGE}.{e}" or target.startswith(f"{PACKAGE}.{e}.") for e in EXCEPTIONS.get(home, ()))
            if top(target) not in allowed and not excepted:
                bad.append(f"{module} -> {target}")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
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


def test_stages_import_only_shared_layers_and_themselves() -> None:
    assert rule_violations(import_graph()) == []


def test_no_import_cycles_between_files() -> None:
    assert cycles(import_graph()) == []


def test_no_source_file_is_over_the_line_limit() -> None:
    long = {str(p.relative_to(SRC)): n for p in (SRC / PACKAGE).rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for directory in {p.parent for p in (root / PACKAGE).rglob("*.py")} | {root / PACKAGE}:
        (directory / "__init__.py").touch()
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # a stage reaching into a sibling inside a function
        ({"deface/runner.py": "def f():\n    from defacebench.preprocess.scan import g\n", "preprocess/scan.py": ""},
         ["defacebench.deface.runner -> defacebench.preprocess.scan"]),
        # relative import of a sibling stage
        ({"model/train.py": "from ..analysis import metrics\n", "analysis/metrics.py": ""},
         ["defacebench.model.train -> defacebench.analysis.metrics"]),
        # a shared layer importing a stage
        ({"imaging/grids.py": "import defacebench.preprocess.bias\n", "preprocess/bias.py": ""},
         ["defacebench.imaging.grids -> defacebench.preprocess.bias"]),
        # analysis may use model.inference, and nothing else of model
        ({"analysis/saliency.py": "from defacebench.model.inference import load_model\nfrom defacebench.model import train\n",
          "model/inference.py": "", "model/train.py": ""},
         ["defacebench.analysis.saliency -> defacebench.model.train"]),
        # allowed: shared layers and itself
        ({"report/html.py": "from defacebench import layout\nfrom defacebench.io.atomic import x\nfrom . import sections\n",
          "report/sections.py": "", "layout.py": "", "io/atomic.py": ""}, []),
    ],
)
def test_the_rule_catches_what_it_should(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    assert rule_violations(import_graph(write_package(tmp_path, files))) == expected


def test_the_cycle_check_finds_a_hidden_cycle(tmp_path: Path) -> None:
    root = write_package(tmp_path, {"simulate/heads.py": "def f():\n    from defacebench.simulate import labels\n",
                                    "simulate/labels.py": "from defacebench.simulate.heads import X\n"})
    assert cycles(import_graph(root)) == [["defacebench.simulate.heads", "defacebench.simulate.labels"]]
