"""The files an installer or a technician edits by hand: device profiles, the bridge's config
file and the console's instance settings (all TOML). Whatever the bytes, the loader answers
with its own error naming the file (ProfileError, BridgeConfigError, SettingsError), never a
traceback, and a good file still loads afterwards."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from console.settings import SettingsError, load_settings
from device_profiles.profiles import PROFILES_DIR, ProfileError, load_profile
from firmware_bridge.config import load_bridge_config
from tests.fuzz.strategies import json_values, mutated
from tests.fuzz.tally import Tally, fuzz_settings


def toml_value(value: Any) -> str:
    """A value as TOML writes it (tables inline); None, which TOML lacks, as an empty table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string (a lone surrogate stays an error)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
            + "}"
        )
    return "{}"


def to_toml(data: Any) -> bytes:
    try:
        if not isinstance(data, dict):
            return f"value = {toml_value(data)}\n".encode("utf-8", "surrogatepass")
        lines = [f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in data.items()]
    except RecursionError:  # this writer's own limit: write the nesting directly
        return b"value = " + b"[" * 5000 + b"]" * 5000 + b"\n"
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


def valid_profile() -> dict[str, Any]:
    return tomllib.loads((PROFILES_DIR / "combined-node.toml").read_text(encoding="utf-8"))


def valid_bridge_config(tmp: Path) -> dict[str, Any]:
    return {
        "device_id": "loa-fz-cfg", "profile": "speaker-node", "zones": ["thon-a", "xa-a"],
        "state_dir": str(tmp / "state"),
        "mqtt": {"host": "127.0.0.1", "port": 1883, "username": "loa-fz-cfg", "password": "s3cret"},
        "cache": {"dir": str(tmp / "cache"), "budget_mb": 64},
    }  # fmt: skip


def valid_settings(tmp: Path) -> dict[str, Any]:
    return {
        "secret_key": "k" * 32, "database_url": f"sqlite:///{tmp / 'c.sqlite3'}",
        "media_dir": str(tmp / "media"),
        "broker": {"admin_password": "a", "console_password": "c", "data_dir": str(tmp / "broker")},
    }  # fmt: skip


def files(valid: dict[str, Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=400),
        st.sampled_from(
            [
                b"",
                b"\xff\xfe\x00n\x00a",
                b"[[[[",
                b"a = 1\na = 2\n",
                b"x = " + b"[" * 5000,
                b"\x00",
                'name = "\u202e"'.encode(),
                b"a = 1e999999",
            ]
        ),
        json_values().map(to_toml),
        mutated(valid, big=False).map(to_toml),
    )


Loader = Callable[[Path], object]


def check_loader(tally: Tally, name: str, path: Path, load: Loader, error: type[Exception],
                 good: bytes) -> Callable[[bytes], None]:  # fmt: skip
    def run(data: bytes) -> None:
        with tally.case(name) as case:
            path.write_bytes(data)
            try:
                load(path)
            except error as exc:
                assert path.name in str(exc) or "unknown" in str(exc)
                case.refused()
            else:
                case.accepted()
        path.write_bytes(good)
        load(path)  # a good file still loads

    return run


# The regression: a file that is not UTF-8 raised UnicodeDecodeError, not the loader's error.
NOT_UTF8 = b"\xff\xfename = 'x'\n"


def test_device_profiles(tally: Tally, tmp_path: Path) -> None:
    path = tmp_path / "fuzzed.toml"
    run = check_loader(tally, "files: device profile", path, load_profile, ProfileError,
                       to_toml(valid_profile()))  # fmt: skip
    given(data=files(valid_profile()))(example(data=NOT_UTF8)(fuzz_settings()(run)))()


def test_bridge_config_file(tally: Tally, tmp_path: Path) -> None:
    path = tmp_path / "loa-fz-cfg.toml"
    valid = valid_bridge_config(tmp_path)
    # BridgeConfigError, or ProfileError (its base) for a file that is not TOML at all.
    run = check_loader(tally, "files: bridge config", path, load_bridge_config,
                       ProfileError, to_toml(valid))  # fmt: skip
    given(data=files(valid))(example(data=NOT_UTF8)(fuzz_settings()(run)))()


def test_console_instance_settings(tally: Tally, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    valid = valid_settings(tmp_path)
    run = check_loader(tally, "files: console settings", path, lambda p: load_settings(p.parent),
                       SettingsError, to_toml(valid))  # fmt: skip
    given(data=files(valid))(example(data=NOT_UTF8)(fuzz_settings()(run)))()


@pytest.mark.parametrize(
    "name", ["", "../speaker-node", "/etc/passwd", "speaker-node\x00", "x" * 5000]
)
def test_profile_names_that_are_not_profiles(tally: Tally, name: str) -> None:
    with tally.case("files: device profile") as case:
        with pytest.raises(ProfileError):
            load_profile(name)
        case.refused()
