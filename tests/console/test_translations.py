"""Every string the console shows is translated into Vietnamese, the default language."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "console" / "translations" / "vi" / "LC_MESSAGES" / "messages.po"
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None}
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2")]


def shown_strings() -> set[str]:
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(ROOT / "console"), METHODS, keywords=KEYWORDS
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_shown_string_has_a_vietnamese_translation() -> None:
    with PO.open("rb") as f:
        catalog = read_po(f)
    translated = {m.id for m in catalog if m.id and m.string and "fuzzy" not in m.flags}
    missing = sorted(shown_strings() - translated)
    assert missing == [], "untranslated (run scripts/translations.py): " + ", ".join(missing)


def test_the_catalogue_finds_the_strings_of_templates_and_code() -> None:
    strings = shown_strings()
    assert "Log in" in strings  # a template
    assert "Administrator" in strings  # a lazy string in code
