"""The design rule on function length: no function outside ``models/pack/`` is longer than 60 lines.

A function's length is its ``def`` node's ``end_lineno - lineno + 1`` as Python's ``ast`` gives it:
decorators are left out, nested functions and methods are counted on their own and inside their parent.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("graph", "deployments", "models", "benchmarks")
# The rule leaves out models/pack/: the converters there write each network's ONNX graph layer by layer.
EXEMPT = (Path("models/pack"),)
LIMIT = 60


def function_lengths(source: str) -> dict[str, int]:
    """Every function and method of a module by qualified name (``Class.method``, ``outer.inner``), with its length in lines."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                lengths[name] = child.end_lineno - child.lineno + 1
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return lengths


def too_long() -> dict[str, int]:
    """Every function over LIMIT lines under ROOTS (EXEMPT aside), as "path:qualified name" -> lines."""
    found = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            relative = path.relative_to(REPO)
            if any(relative.is_relative_to(exempt) for exempt in EXEMPT):
                continue
            for name, lines in function_lengths(path.read_text()).items():
                if lines > LIMIT:
                    found[f"{relative.as_posix()}:{name}"] = lines
    return found


def test_no_function_outside_the_pack_is_longer_than_60_lines():
    offenders = too_long()
    assert not offenders, f"functions over {LIMIT} lines (split them into functions that each do one job): " + ", ".join(
        f"{name} ({lines})" for name, lines in sorted(offenders.items())
    )


def test_length_counts_from_the_def_line_and_names_methods_and_inner_functions():
    source = "@decorator\n@another\ndef outer():\n    def inner():\n        pass\n\nclass C:\n    async def method(self):\n        return 1\n"
    assert function_lengths(source) == {"outer": 3, "outer.inner": 2, "C.method": 2}
