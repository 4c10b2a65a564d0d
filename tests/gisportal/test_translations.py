"""Every Chinese message the portal marks for translation has an English translation (the switch in the
header must not leave Chinese behind). The marked strings are found in the source itself: calls of
``_``, ``_g``, ``gettext``, ``gettext_lazy``, ``pgettext`` and ``ngettext`` with literal arguments (read
with ``ast``, so implicitly concatenated literals are one message) and ``{% trans %}`` in templates; each
is looked up through Django's own catalogue, compiled from gisportal/locale by the test command."""
import ast
import re
from pathlib import Path

import pytest
from django.utils import translation
from django.utils.translation import gettext, pgettext

ROOT = Path(__file__).resolve().parents[2]
CJK = re.compile(r"[\u4e00-\u9fff]")
FUNCS = {"_", "_g", "gettext", "gettext_lazy", "pgettext", "pgettext_lazy", "ngettext", "ngettext_lazy"}
# settings.py names the languages in their own script (简体中文, English): not messages to translate
SOURCES = sorted(p for p in [*ROOT.glob("gisportal/*.py"), *ROOT.glob("gisportal/api/*.py"),
                             *ROOT.glob("layers/**/*.py"), *ROOT.glob("importers/**/*.py")]
                 if p.name != "settings.py" and "migrations" not in p.parts)
TEMPLATES = sorted(ROOT.glob("gisportal/templates/**/*.html"))


def _marked(path: Path):
    """(line, context or None, message) of each literal marked for translation in a Python file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if name not in FUNCS or not node.args:
            continue
        lit = [a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None for a in node.args]
        if name.startswith("pgettext"):
            if len(lit) >= 2 and lit[0] is not None and lit[1] is not None:
                yield node.lineno, lit[0], lit[1]
        elif lit[0] is not None:
            yield node.lineno, None, lit[0]


def _template_marked(path: Path):
    text = path.read_text(encoding="utf-8")
    for m in re.finditer(r'{%\s*trans\s+"([^"]+)"(?:\s+context\s+"([^"]+)")?', text):
        yield text.count("\n", 0, m.start()) + 1, m.group(2), m.group(1)


def _untranslated(items, where):
    out = []
    with translation.override("en"):
        for line, ctx, msg in items:
            if not CJK.search(msg):
                continue
            en = pgettext(ctx, msg) if ctx else gettext(msg)
            if en == msg:
                out.append(f"{where}:{line}: {msg}")
    return out


def test_the_scan_finds_marked_messages():
    """Guard: the scan sees messages at all (a broken scan would pass every file)."""
    found = [m for p in SOURCES for m in _marked(p)]
    assert len(found) > 200 and any(msg == "沿道路" for _, _, msg in found)
    assert sum(1 for p in TEMPLATES for _ in _template_marked(p)) > 100


@pytest.mark.parametrize("path", SOURCES + TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_marked_chinese_message_has_english(path):
    items = _marked(path) if path.suffix == ".py" else _template_marked(path)
    missing = _untranslated(items, path.relative_to(ROOT))
    assert not missing, "no English for:\n" + "\n".join(missing)
