"""`make run`: one command that brings up a whole commune on this machine.

Broker (authentication on) + console web + console worker + a simulated fleet (speaker and
fire-point bridges in two hamlets), each its own process as in production. Ctrl-C stops all.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from audio_library import AudioStore, synthesize_speech
from console.accounts import ensure_first_admin
from console.broker import BrokerProcess, BrokerSettings, DynsecAdmin, free_port
from console.db import Database, upgrade
from console.models import AudioFile, Device, Schedule, Zone, ZoneKind
from console.presets import ensure_presets
from console.provisioning import register_device, reissue_credentials
from console.settings import BrokerConfig, Settings, write_new_instance

log = logging.getLogger("devrun")

COMMUNE = ("xa-an-binh", "Xã An Bình")
HAMLETS = [("thon-dong", "Thôn Đông"), ("thon-tay", "Thôn Tây")]
FLEET = [
    ("loa-dong-01", "Cụm loa Đông 1", "speaker-node", "thon-dong"),
    ("loa-dong-02", "Cụm loa Đông 2", "speaker-node", "thon-dong"),
    ("loa-tay-01", "Cụm loa Tây 1", "speaker-node", "thon-tay"),
    ("cc-dong-01", "Điểm chữa cháy Đông", "fire-point-node", "thon-dong"),
    ("cc-tay-01", "Điểm chữa cháy Tây", "combined-node", "thon-tay"),
]
WELCOME_TEXT = (
    "Xin chào bà con. Đây là bản tin thử của hệ thống Tiếng loa an ninh xã An Bình. "
    "Hệ thống đã sẵn sàng."
)


def _port_or_free(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def broker_settings(settings: Settings) -> BrokerSettings:
    b, tls = settings.broker, settings.tls
    return BrokerSettings(
        data_dir=b.data_dir,
        admin_username=b.admin_username,
        admin_password=b.admin_password.get_secret_value(),
        host=b.host,
        port=b.port,
        tls_port=tls.broker_port if tls else 0,
        tls_host=tls.broker_host if tls else "",
        tls_cert=tls.cert_file if tls else None,
        tls_key=tls.key_file if tls else None,
    )


def broker_config(bs: BrokerSettings, console_username: str, console_password: str) -> BrokerConfig:
    """The console's [broker] settings for a broker started from `bs` with this console
    account (the inverse of broker_settings; throwaway instances: tests, bench, screenshots)."""
    return BrokerConfig(
        host=bs.host,
        port=bs.port,
        public_host=bs.host,
        admin_username=bs.admin_username,
        admin_password=bs.admin_password,
        console_username=console_username,
        console_password=console_password,
        data_dir=bs.data_dir,
    )


def seed_commune(db: Database, admin: DynsecAdmin, settings: Settings, fleet_dir: Path) -> None:
    """Zones and devices of the demo commune; fleet config files for the simulator."""
    fleet_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(fleet_dir, 0o700)
    with db.session() as session:
        if session.get(Zone, COMMUNE[0]) is None:
            session.add(Zone(id=COMMUNE[0], name=COMMUNE[1], kind=ZoneKind.COMMUNE))
            for zid, name in HAMLETS:
                session.add(Zone(id=zid, name=name, kind=ZoneKind.HAMLET, parent_id=COMMUNE[0]))
            session.flush()
    for device_id, name, profile, zone_id in FLEET:
        path = fleet_dir / f"{device_id}.toml"
        if path.exists():
            continue
        state_dir = PurePosixPath(str((fleet_dir / device_id).resolve()))
        with db.session() as session:
            if session.get(Device, device_id) is None:
                result = register_device(
                    session,
                    admin,
                    settings,
                    device_id=device_id,
                    name=name,
                    profile=profile,
                    zone_id=zone_id,
                    state_dir=state_dir,
                )
            else:
                result = reissue_credentials(session, admin, settings, device_id, state_dir)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(result.bridge_config)


def seed_welcome(db: Database, settings: Settings, delay_s: float) -> None:
    """A spoken test announcement and a one-off schedule shortly after start."""
    with db.session() as session:
        audio = session.scalar(select(AudioFile).where(AudioFile.name == "Bản tin thử"))
        if audio is None:
            store = AudioStore(settings.media_dir)
            with tempfile.TemporaryDirectory() as tmp:
                wav = synthesize_speech(WELCOME_TEXT, Path(tmp))
                meta = store.import_file(wav, "ban-tin-thu.wav")
            audio = session.get(AudioFile, meta.sha256) or AudioFile(
                sha256=meta.sha256,
                name="Bản tin thử",
                original_name="ban-tin-thu.wav",
                duration_ms=meta.duration_ms,
                size_bytes=meta.size_bytes,
                mime=meta.mime,
                loudness_lufs=meta.loudness_lufs,
            )
            session.add(audio)
            session.flush()
        tz = ZoneInfo(settings.site_timezone)
        at = (datetime.now(UTC) + timedelta(seconds=delay_s)).astimezone(tz).replace(microsecond=0)
        session.add(
            Schedule(
                name=f"Phát thử lúc {at:%H:%M:%S}",
                audio_sha256=audio.sha256,
                rule={"kind": "once", "at": at.isoformat()},
                zone_ids=[HAMLETS[0][0]],
                priority="scheduled",
            )
        )
        print(f"  A test announcement is scheduled for {at:%H:%M:%S} in {HAMLETS[0][1]}.")


class Children:
    """The console and fleet processes, their output prefixed and passed through."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str]) -> None:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.procs.append((name, proc))
        threading.Thread(target=self._pump, args=(name, proc), daemon=True).start()

    @staticmethod
    def _pump(name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(f"[{name:6}] {line.decode(errors='replace')}")
            sys.stdout.flush()

    def any_exited(self) -> str | None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                return f"{name} exited with {proc.returncode}"
        return None

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_http(port: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.3):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def run(instance_dir: Path, welcome_delay_s: float = 20.0) -> int:
    settings = write_new_instance(
        instance_dir, broker_port=_port_or_free(18830), web_port=_port_or_free(8080)
    )
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    broker = BrokerProcess(broker_settings(settings))
    broker.start()
    children = Children()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        b = settings.broker
        with DynsecAdmin(
            b.host, b.port, b.admin_username, b.admin_password.get_secret_value()
        ) as admin:
            admin.provision_console(b.console_username, b.console_password.get_secret_value())
            fleet_dir = instance_dir / "fleet"
            seed_commune(db, admin, settings, fleet_dir)
        with db.session() as session:
            first_password = ensure_first_admin(session)
            n_devices = session.scalar(select(func.count(Device.id)))
        started = time.monotonic()
        created = ensure_presets(db, settings.media_dir)  # before the worker pushes configs
        if created:
            took = time.monotonic() - started
            print(f"  Emergency presets generated: {len(created)} in {took:.1f} s", flush=True)
        py = sys.executable
        base = [py, "-m", "console", "--instance", str(instance_dir)]
        children.start("web", [*base, "web"])
        children.start("worker", [*base, "worker"])
        children.start(
            "fleet", [py, "-m", "firmware_bridge", "--simulate", "--fleet-dir", str(fleet_dir)]
        )
        if not _wait_http(settings.web_port):
            print("The web console did not start; see the [web] lines above.", file=sys.stderr)
            return 1
        print()
        print("=" * 64)
        print(f"  Console:  http://127.0.0.1:{settings.web_port}/")
        if first_password:
            print(f"  First admin login (shown once): admin / {first_password}")
        else:
            print("  Log in with your existing account (first admin: 'admin').")
        print(f"  Broker:   127.0.0.1:{settings.broker.port} (authentication on)")
        print(f"  Fleet:    {n_devices} simulated devices in {len(HAMLETS)} hamlets")
        seed_welcome(db, settings, welcome_delay_s)
        print("  Press Ctrl-C to stop everything.")
        print("=" * 64, flush=True)
        while not stop.wait(0.5):
            problem = children.any_exited()
            if problem:
                print(f"Stopping: {problem}", file=sys.stderr)
                return 1
        return 0
    finally:
        children.stop()
        broker.stop()
        db.dispose()
        print("Stopped: fleet, worker, web and broker.")
