"""The one error shape users see: a machine-readable code and the reason in Chinese and English."""
from __future__ import annotations


class BilingualError(ValueError):
    """Refused input: ``code`` for programs, ``zh`` and ``en`` for people.

    >>> e = BilingualError("radius", "半径不能为负数", "the radius must not be negative")
    >>> e.message("en"), e.message("zh-hans"), str(e)
    ('the radius must not be negative', '半径不能为负数', 'the radius must not be negative')
    """

    def __init__(self, code: str, zh: str, en: str):
        super().__init__(en)
        self.code, self.zh, self.en = code, zh, en

    def message(self, lang: str = "zh") -> str:
        return self.en if lang.startswith("en") else self.zh
