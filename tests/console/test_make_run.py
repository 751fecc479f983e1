"""`make run`'s program: a whole commune comes up, plays its test announcement, stops cleanly,
and comes up again on the same instance."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


class Run:
    def __init__(self, instance: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "console",
                "--instance",
                str(instance),
                "run",
                "--welcome-delay",
                "3",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def read_until(self, pattern: str, timeout_s: float = 90) -> re.Match[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(self.lines[-60:])}")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        self.lines.append(out)
        return out


def test_make_run_twice(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    run = Run(instance)
    try:
        url = run.read_until(r"Console:\s+(http://\S+)/").group(1)
        password = run.read_until(r"First admin login \(shown once\): admin / (\S+)").group(1)
        run.read_until(r"Press Ctrl-C")
        token = requests.post(
            f"{url}/api/v1/auth/token", json={"username": "admin", "password": password}, timeout=10
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 60
        summary: dict[str, int] = {}
        while time.monotonic() < deadline and summary.get("finished") != 2:
            listed = requests.get(f"{url}/api/v1/broadcasts", headers=headers, timeout=10).json()
            summary = listed[0]["summary"] if listed else {}
            time.sleep(0.5)
        assert summary == {"finished": 2}, "".join(run.lines[-60:])
        devices = requests.get(f"{url}/api/v1/devices", headers=headers, timeout=10).json()
        assert len(devices) == 5 and all(d["online"] for d in devices)
    finally:
        out = run.stop()
    assert run.proc.returncode == 0, out
    assert "Stopped: fleet, worker, web and broker." in out
    config = (instance / "config.toml").read_text()
    assert "secret_key" in config and oct((instance / "config.toml").stat().st_mode)[-3:] == "600"

    again = Run(instance)
    try:
        url2 = again.read_until(r"Console:\s+(http://\S+)/").group(1)
        again.read_until(r"Press Ctrl-C")
        assert not any("First admin login" in line for line in again.lines)
        assert url2 == url
        token = requests.post(
            f"{url}/api/v1/auth/token", json={"username": "admin", "password": password}, timeout=10
        ).json()["token"]
        devices = requests.get(
            f"{url}/api/v1/devices", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        assert len(devices) == 5
    finally:
        again.stop()
    assert again.proc.returncode == 0
