"""The Python blocks of README.md and docs/*.md: each parses, and its imports of this library
resolve (a module moved or renamed leaves no stale import in the docs)."""

import ast
import importlib
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^ *```python\n(.*?)^ *```", re.S | re.M)


def _blocks():
    for page in PAGES:
        for i, match in enumerate(BLOCK.finditer(page.read_text())):
            lines = match.group(1).splitlines()
            indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
            code = "\n".join(x[indent:] for x in lines)
            yield pytest.param(code, id=f"{page.name}:{i}")


@pytest.mark.parametrize("code", list(_blocks()))
def test_python_blocks_parse_and_their_imports_resolve(code):
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module.startswith("fgvc_jax"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(
                    f"{node.module}.{alias.name}"
                ), f"from {node.module} import {alias.name}: no such name"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fgvc_jax"):
                    importlib.import_module(alias.name)


def test_the_pages_have_python_blocks():
    assert len(list(_blocks())) >= 3  # README's backbones block and docs/tools.md's three
