"""Refresh the console's Vietnamese catalogue: extract every translatable string, merge it
into console/translations/vi/LC_MESSAGES/messages.po, take translations from any
console/translations/pending/*.json ({"English msgid": "Vietnamese"}), compile, and list
what is still untranslated (exit 1 if anything is).

Usage: .venv/bin/python scripts/translations.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "console" / "translations"
PO = TRANSLATIONS / "vi" / "LC_MESSAGES" / "messages.po"
BABEL = [sys.executable, "-m", "babel.messages.frontend"]


def run(*args: str) -> None:
    subprocess.run([*BABEL, *args], cwd=ROOT, check=True, capture_output=True)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        pot = str(Path(tmp) / "messages.pot")
        run("extract", "-F", "console/babel.cfg", "-k", "_l", "-k", "lazy_gettext",
            "--no-location", "--sort-output", "-o", pot, ".")  # fmt: skip
        run("update", "-i", pot, "-d", str(TRANSLATIONS), "-N", "--ignore-obsolete")
    pending: dict[str, str] = {}
    for path in sorted((TRANSLATIONS / "pending").glob("*.json")):
        pending.update(json.loads(path.read_text(encoding="utf-8")))
    with PO.open("rb") as f:
        catalog = read_po(f)
    for message in catalog:
        if message.id and isinstance(message.id, str) and message.id in pending:
            message.string = pending[message.id]
        message.flags.discard("fuzzy")
    with PO.open("wb") as f:
        write_po(f, catalog, width=100, omit_header=False, sort_output=True)
    run("compile", "-d", str(TRANSLATIONS))
    missing = [m.id for m in catalog if m.id and not m.string]
    for msgid in missing:
        print(f"untranslated: {msgid!r}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
