"""Device profiles: the bundled three load; every mistake is named with its file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_profiles import Capability, ProfileError, list_profiles, load_profile
from device_profiles.profiles import PROFILES_DIR


def test_three_profiles_ship_and_load() -> None:
    assert list_profiles() == ["combined-node", "fire-point-node", "speaker-node"]
    speaker = load_profile("speaker-node")
    assert speaker.capabilities == {Capability.SPEAKER} and speaker.amplifier is not None
    fire = load_profile("fire-point-node")
    assert fire.has_fire_point and not fire.has_speaker and fire.serial is not None
    both = load_profile("combined-node")
    assert both.has_speaker and both.has_fire_point


def test_a_profile_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        (PROFILES_DIR / "speaker-node.toml").read_text().replace('"speaker-node"', '"mine"')
    )
    assert load_profile(path).name == "mine"


def test_unknown_profile_name_suggests_the_nearest() -> None:
    with pytest.raises(ProfileError, match="did you mean 'speaker-node'"):
        load_profile("speaker-nod")


def write_variant(tmp_path: Path, old: str, new: str, base: str = "fire-point-node") -> Path:
    text = (PROFILES_DIR / f"{base}.toml").read_text()
    assert old in text
    path = tmp_path / "broken.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "pin = 23",
            "pin = 41",
            "broken.toml: gpio.call_point.pin: 41 is not a valid BCM GPIO pin (0-27)",
        ),
        (
            "pin = 23",
            "pin = 22",
            "broken.toml: gpio.call_point.pin 22 is already gpio.cabinet_door.pin",
        ),
        (
            "debounce_ms = 50",
            "debounce_msec = 50",
            "broken.toml: gpio.call_point.debounce_msec: unknown key; did you mean 'debounce_ms'?",
        ),
        (
            "interval_s = 60",
            "interval = 60",
            "broken.toml: telemetry.interval: unknown key; did you mean 'interval_s'?",
        ),
        ('name = "fire-point-node"\n', "", "broken.toml: name: missing"),
        (
            "restore = 7.5",
            "restore = 6.5",
            "broken.toml: thresholds.pressure_low_bar: restore (6.5) must be above trigger (7.0)",
        ),
        (
            "restore = 60.0",
            "restore = 80.0",
            "broken.toml: thresholds.temperature_high_c: restore (80.0) must be below trigger (70.0)",
        ),
        ("[serial]", "[serial\n", "broken.toml: not valid TOML"),
        ("baudrate = 9600", "baudrate = 9601", "broken.toml: serial.baudrate"),
        ('url = "/dev/ttyAMA0"\n', "", "broken.toml: serial.url: missing"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(ProfileError) as err:
        load_profile(write_variant(tmp_path, old, new))
    assert str(err.value).startswith(message)


def test_a_speaker_node_needs_its_amplifier(tmp_path: Path) -> None:
    path = write_variant(
        tmp_path, "[gpio.amplifier]\npin = 17", "[gpio.siren]\npin = 17", base="speaker-node"
    )
    with pytest.raises(ProfileError, match=r"speaker node needs gpio\.amplifier"):
        load_profile(path)
