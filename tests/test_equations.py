"""Every paper equation is findable by its number in a docstring of the code that implements it."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "caeav"
EQ = re.compile(r"Eq\.\s*(\d+)(?:\s*[-–]\s*(\d+))?")


def _docstring_equations() -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                for m in EQ.finditer(doc):
                    lo = int(m.group(1))
                    hi = int(m.group(2) or lo)
                    for n in range(lo, hi + 1):
                        found.setdefault(n, set()).add(str(path.relative_to(ROOT)))
    return found


def test_each_paper_equation_is_named_in_a_docstring():
    found = _docstring_equations()
    missing = [n for n in range(1, 26) if n not in found]
    assert not missing, f"equations with no docstring naming them: {missing}"


def test_encoder_equations_live_in_their_modules():
    found = _docstring_equations()
    for n in range(1, 10):
        assert any(p.startswith("model/caste") or p.startswith("model/enrichment") for p in found[n]), (n, found[n])
