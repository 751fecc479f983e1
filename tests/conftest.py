"""Fixtures shared by the whole suite: a real, authenticated Mosquitto on a free port; the
soak switch; the fuzz tests' tally of cases, gathered from every worker of a parallel run."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from console.broker import BrokerProcess, BrokerSettings, DynsecAdmin, free_port
from tests.fuzz.tally import Tally

T = TypeVar("T")


SOAK = os.environ.get("LOA_SOAK") == "1"


TALLY = pytest.StashKey[Tally]()  # the fuzz tests' cases per decoder (tests/fuzz/tally.py)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[TALLY] = Tally()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker of a parallel run (pytest-xdist) hands its tally to the main process."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fuzz_tally"] = session.config.stash[TALLY].as_json()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """The main process of a parallel run adds up its workers' tallies."""
    rows = getattr(node, "workeroutput", {}).get("fuzz_tally")
    if rows:
        node.config.stash[TALLY].merge(rows)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """The fuzz figures (docs/reliability.md), also as JSON into LOA_FUZZ_REPORT when set."""
    tally = config.stash.get(TALLY, None)
    if tally is None or not tally.rows or hasattr(config, "workeroutput"):
        return
    terminalreporter.section("bad input: cases per decoder")
    for line in tally.lines():
        terminalreporter.write_line(line)
    target = os.environ.get("LOA_FUZZ_REPORT")
    if target:
        tally.write(Path(target))
        terminalreporter.write_line(f"written to {target}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Soak runs are long: only `make soak` (LOA_SOAK=1) runs them."""
    if SOAK:
        return
    skip = pytest.mark.skip(reason="soak run: `make soak`")
    for item in items:
        if item.get_closest_marker("soak"):
            item.add_marker(skip)


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str) -> T:
    """The predicate's first truthy value, polled; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@dataclass
class Broker:
    """A running broker and a way to create accounts on it."""

    process: BrokerProcess
    console_username: str = "console"
    console_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    @property
    def host(self) -> str:
        return self.process.settings.host

    @property
    def port(self) -> int:
        return self.process.settings.port

    def admin(self) -> DynsecAdmin:
        s = self.process.settings
        return DynsecAdmin(s.host, s.port, s.admin_username, s.admin_password)

    def provision_device(self, device_id: str, zone_ids: list[str]) -> str:
        """Create the device's own account; returns its password."""
        password = secrets.token_urlsafe(16)
        with self.admin() as admin:
            admin.provision_device(device_id, password, zone_ids)
        return password


def start_broker(data_dir: Path) -> Broker:
    settings = BrokerSettings(
        data_dir=data_dir,
        admin_username="broker-admin",
        admin_password=secrets.token_urlsafe(16),
        port=free_port(),
    )
    process = BrokerProcess(settings)
    process.start()
    broker = Broker(process)
    with broker.admin() as admin:
        admin.provision_console(broker.console_username, broker.console_password)
    return broker


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the session (tests use distinct device and zone ids)."""
    broker = start_broker(tmp_path_factory.mktemp("broker"))
    yield broker
    broker.process.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the test's own, for tests that stop, kill or restart it."""
    broker = start_broker(tmp_path / "broker")
    yield broker
    broker.process.stop()
