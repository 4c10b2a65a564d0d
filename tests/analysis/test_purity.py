"""layers/analysis stays pure: no module in it imports Django (DESIGN.md, Architecture)."""
import ast
from pathlib import Path

ANALYSIS = Path(__file__).resolve().parents[2] / "layers" / "analysis"


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_analysis_modules_exist():
    assert len(list(ANALYSIS.glob("*.py"))) >= 2


def test_no_django_import_in_analysis():
    offenders = {p.name: sorted(r) for p in ANALYSIS.rglob("*.py")
                 if (r := _imported_roots(p) & {"django", "rest_framework", "gisportal", "importers"})}
    assert offenders == {}


def test_checker_catches_a_django_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from django.db import models\n", encoding="utf-8")
    assert "django" in _imported_roots(bad)
