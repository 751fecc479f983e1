"""The Pi's requirement file pins the same versions as the project's, and is enough to import
the bridge: a Pi never runs a version the suite did not test."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            out[name.lower().replace("_", "-")] = version
    return out


def test_the_pi_pins_are_the_projects_pins() -> None:
    project = pins(ROOT / "requirements.txt")
    pi = pins(ROOT / "firmware_bridge" / "requirements-pi.txt")
    assert {name: project.get(name) for name in pi} == pi


def test_the_bridge_imports_nothing_the_pi_does_not_install() -> None:
    pi = set(pins(ROOT / "firmware_bridge" / "requirements-pi.txt"))
    import_names = {"paho": "paho-mqtt", "serial": "pyserial", "gpiozero": "gpiozero",
                    "pydantic": "pydantic", "requests": "requests"}  # fmt: skip
    local = {"device_profiles", "firmware_bridge"}
    for source in [*(ROOT / "firmware_bridge").glob("*.py"), *(ROOT / "device_profiles").glob("*.py")]:
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in local or top == "__future__":
                    continue
                assert import_names.get(top) in pi, f"{source.name} imports {top}"
