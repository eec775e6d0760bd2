"""The layout's promises, checked: docs/architecture.md names every module of the package;
module-level imports form no cycle; a function imports only to defer an optional heavy
dependency (or for one of the named exceptions); the top level holds the commands and few
else; no test or PyTorch twin keeps its own list of method names (the registry is the one
list)."""

import ast
import pathlib

from fgvc_jax.methods import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fgvc_jax"
MAX_TOP_LEVEL = 14

# What a function may import (anything else is imported at module level):
#: optional heavy dependencies: extras a fresh `make venv` lacks (torch, torchvision, timm,
#: jax2onnx, onnx, onnxruntime, safetensors) or slow imports a command may never need
#: (tensorflow, tensorflow_datasets, matplotlib, clu; jax2tf imports tensorflow), imported
#: on first use.
HEAVY_DEPENDENCIES = frozenset(
    {
        "torch",
        "torchvision",
        "timm",
        "tensorflow",
        "tensorflow_datasets",
        "matplotlib",
        "jax2onnx",
        "wandb",  # the optional W&B writer (run/wandb_writer.py)
        "onnx",
        "onnxruntime",
        "safetensors",
        "clu",
        "jax.experimental.jax2tf",
    }
)
#: a module of the package that imports these at module level (found by the test, e.g.
#: `reference.backbones`, `convert.torch_reference`) counts as torch itself.
TORCH = frozenset({"torch", "torchvision", "timm"})
#: torch, torchvision and timm on first use (its module `__getattr__` imports them).
TORCH_SHIM = "fgvc_jax.reference.torch_import"
#: aot: the target platform's plugin path must be set before jax is imported.
EXEMPT_FILES = frozenset({"fgvc_jax/aot.py"})
#: the one import that points up (docs/architecture.md): the recipe's steps are built by
#: `loop.step`, which stands on the recipe.
EXEMPT_FUNCTIONS = frozenset(
    {
        ("fgvc_jax/recipe/__init__.py", "Recipe.train_step"),
        ("fgvc_jax/recipe/__init__.py", "Recipe.eval_step"),
    }
)
#: an import kept local to break a real cycle says so on its line: `# cycle: a -> b -> a`
#: (checked: its module imports the importing one at module level, directly or not).
CYCLE_MARK = "# cycle:"


def _modules() -> dict[str, pathlib.Path]:
    """Dotted name → file of every module of the package (`__init__` as its package)."""
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = f.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _named(doc: str, rel: pathlib.Path) -> bool:
    """`rel` (a path under fgvc_jax/) is named: in full, or by its file name in a paragraph
    about its top folder ("**`loop/`** — `experiment.py` ...")."""
    if str(rel) in doc:
        return True
    if len(rel.parts) == 1:
        return f"`{rel.name}`" in doc
    about = [p for p in doc.split("\n\n") if f"**`{rel.parts[0]}/`**" in p]
    return any(f"`{rel.name}`" in p or f"{rel.name}`" in p for p in about)


def test_architecture_doc_names_every_module():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = [
        str(f.relative_to(PACKAGE))
        for f in _modules().values()
        if f.name != "__init__.py" and not _named(doc, f.relative_to(PACKAGE))
    ]
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"


def _module_level_imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The package modules `name` imports at module level (not inside functions)."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import submodule` needs only the submodule (the package is in
            # sys.modules while its __init__ runs); `from module import name`, the module
            subs = [f"{base}.{a.name}" for a in node.names]
            targets = [t for t in subs if t in known] or [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def test_no_import_cycle_at_module_level():
    modules = _modules()
    graph = {n: _module_level_imports(n, f, set(modules)) for n, f in modules.items()}
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(n, path):
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(" → ".join(path[path.index(m) :] + [m]))
            elif m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def _function_imports(path: pathlib.Path, known: set[str]):
    """(line, function qualname, statement, imported modules) of every import inside a
    function of `path`; `from a import b` imports `a.b` (a name of `a` inside the package
    unless `a.b` is a module of it)."""
    out = []

    def visit(node, scope: list[str], in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = in_function or not isinstance(child, ast.ClassDef)
                visit(child, scope + [child.name], inner)
            elif isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                if isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                else:
                    base = child.module or ""
                    subs = [f"{base}.{a.name}" for a in child.names]
                    inside = base.split(".")[0] == PACKAGE.name
                    targets = [base if inside and t not in known else t for t in subs]
                out.append((child.lineno, ".".join(scope), ast.unparse(child), targets))
            else:
                visit(child, scope, in_function)

    visit(ast.parse(path.read_text()), [], False)
    return out


def _torch_modules(modules: dict[str, pathlib.Path], graph: dict[str, set[str]]) -> set[str]:
    """The package's modules that import torch, torchvision or timm at module level, directly
    or through another such module."""
    direct = set()
    for name, path in modules.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                tops = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = {(node.module or "").split(".")[0]}
            else:
                continue
            if tops & TORCH:
                direct.add(name)
    found = set(direct)
    while True:
        more = {n for n, deps in graph.items() if deps & found} - found
        if not more:
            return found
        found |= more


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        n = todo.pop()
        if n == goal:
            return True
        if n not in seen:
            seen.add(n)
            todo += graph.get(n, ())
    return False


def test_function_local_imports_only_defer_heavy_dependencies():
    modules = _modules()
    graph = {n: _module_level_imports(n, f, set(modules)) for n, f in modules.items()}
    deferred = _torch_modules(modules, graph) | {TORCH_SHIM}

    def allowed(target: str) -> bool:
        parts = target.split(".")
        prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
        return bool(prefixes & HEAVY_DEPENDENCIES) or target in deferred

    bad = []
    for name, path in modules.items():
        rel = str(path.relative_to(ROOT))
        if rel in EXEMPT_FILES:
            continue
        lines = path.read_text().splitlines()
        for line, function, statement, targets in _function_imports(path, set(modules)):
            if (rel, function) in EXEMPT_FUNCTIONS or all(map(allowed, targets)):
                continue
            if CYCLE_MARK in lines[line - 1] and all(
                t in modules and _reaches(graph, t, name) for t in targets
            ):
                continue
            bad.append(f"{rel}:{line} {function}: {statement}")
    assert not bad, (
        "function-local imports that defer no optional heavy dependency (import them at "
        "module level, or mark a real cycle `# cycle: a -> b -> a`):\n" + "\n".join(bad)
    )


def test_top_level_holds_the_commands():
    top = sorted(f.stem for f in PACKAGE.glob("*.py") if f.name != "__init__.py")
    assert len(top) <= MAX_TOP_LEVEL, top
    for command in ("main", "evaluate", "predict", "explain", "export", "aot", "compare"):
        assert command in top


def _literal_method_lists(path: pathlib.Path, names: set[str]) -> list[int]:
    """Line numbers of list/tuple/set literals holding two or more method names (a sweep
    written by hand; a dict of each method's expected values is test data)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            continue
        elts = node.elts
        found = {e.value for e in elts if isinstance(e, ast.Constant) and e.value in names}
        if len(found) >= 2:
            lines.append(node.lineno)
    return lines


def test_no_literal_method_list_in_tests_or_twins():
    names = set(registry.METHODS)
    files = list((ROOT / "tests").rglob("*.py")) + list((PACKAGE / "reference").rglob("*.py"))
    bad = [
        f"{f.relative_to(ROOT)}:{line}"
        for f in files
        for line in _literal_method_lists(f, names)
        if f.name != "test_architecture.py"
    ]
    assert not bad, "method names listed by hand (read methods.registry): " + ", ".join(bad)
