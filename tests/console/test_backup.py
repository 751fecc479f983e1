"""Backup and restore: everything comes back in a fresh instance, and a damaged backup is
refused before anything is written."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import MetaData, select

from console.__main__ import main as console_main
from console.backup import BackupError, _encode, create_backup, restore_backup
from console.broker import BrokerProcess, BrokerSettings, free_port
from console.db import Database, make_engine
from console.models import Schedule, User, WebSession
from console.settings import Settings, add_tls_section, load_settings, write_instance_config
from console.tls import TLS_DIR, TlsFiles, issue_server_certificate
from tests.conftest import Broker
from tests.console.conftest import token_for
from tests.console.test_broker import Peer


def write_config(settings: Settings) -> None:
    """The instance's config.toml, as `make run` writes it (the fixtures build settings only)."""
    values: dict[str, Any] = settings.model_dump(mode="json", exclude={"broker", "instance_dir"})
    values["secret_key"] = settings.secret_key.get_secret_value()
    broker = settings.broker.model_dump(mode="json")
    broker["admin_password"] = settings.broker.admin_password.get_secret_value()
    broker["console_password"] = settings.broker.console_password.get_secret_value()
    values["broker"] = broker
    write_instance_config(settings.instance_dir, values)


def dump(database_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, values as the backup encodes them (backend-neutral)."""
    engine = make_engine(database_url)
    metadata = MetaData()
    metadata.reflect(engine)
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            order = list(table.primary_key.columns) or list(table.columns)
            rows = conn.execute(select(table).order_by(*order)).mappings()
            out[table.name] = [{k: _encode(v) for k, v in r.items()} for r in rows]
    engine.dispose()
    return out


@pytest.fixture
def populated(
    client: FlaskClient, settings: Settings, db: Database, tmp_path: Path
) -> tuple[str, str]:
    """An instance with zones, a registered device, audio and a schedule; the device's id
    and MQTT password (from the installer's config file). The broker is shared by the
    suite: the device id is the test's own."""
    device_id = f"loa-bk-{uuid.uuid4().hex[:8]}"
    admin = token_for(client, "admin")
    for zone in (
        {"id": "xa-bk", "name": "Xã Sao Lưu", "kind": "commune"},
        {"id": "thon-bk", "name": "Thôn Một", "kind": "hamlet", "parent_id": "xa-bk"},
    ):
        assert client.post("/api/v1/zones", json=zone, headers=admin).status_code == 201
    resp = client.post(
        "/api/v1/devices",
        json={"id": device_id, "name": "Loa đầu làng", "profile": "speaker-node",
              "zone_id": "thon-bk"},
        headers=admin,
    )  # fmt: skip
    assert resp.status_code == 201, resp.get_json()
    password = tomllib.loads(resp.get_json()["bridge_config"])["mqtt"]["password"]
    wav = tmp_path / "tone.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
         "-ac", "1", str(wav)],
        check=True,
    )  # fmt: skip
    with wav.open("rb") as fh:
        up = client.post(
            "/api/v1/audio",
            data={"file": (fh, "Thông báo.wav"), "name": "Thông báo họp"},
            headers=token_for(client, "operator"),
        )
    assert up.status_code == 201, up.get_json()
    with db.session() as session:
        session.add(
            Schedule(
                name="Bản tin sáng", audio_sha256=up.get_json()["sha256"],
                rule={"kind": "daily", "times": ["06:30"]}, zone_ids=["xa-bk"],
                priority="scheduled", volume_pct=None, gong=True, enabled=True, created_by=None,
            )
        )  # fmt: skip
    write_config(settings)
    return device_id, password


def test_a_restored_instance_has_every_row_file_and_device_account(
    populated: tuple[str, str], settings: Settings, mqtt_broker: Broker, tmp_path: Path
) -> None:
    archive = tmp_path / "backup.tar.gz"
    manifest = create_backup(settings, archive)
    assert manifest["rows"]["devices"] >= 1 and manifest["media_files"] >= 1

    restored_dir = tmp_path / "restored"
    port = free_port()
    result = restore_backup(
        archive,
        restored_dir,
        database_url=f"sqlite:///{restored_dir.resolve() / 'console.sqlite3'}",
        broker_port=port,
    )
    restored = load_settings(restored_dir)
    assert restored.secret_key == settings.secret_key  # sessions and tokens stay valid

    before, after = dump(settings.database_url), dump(restored.database_url)
    for row in after["device_configs"]:
        assert row.pop("published_version") is None  # pushed again to the new broker
    for row in before["device_configs"]:
        row.pop("published_version")
    assert after == before
    assert result.rows["schedules"] == len(before["schedules"])

    for path in settings.media_dir.rglob("*.mp3"):
        copy = restored.media_dir / path.relative_to(settings.media_dir)
        assert copy.read_bytes() == path.read_bytes()

    # The restored broker knows the device: its old password still logs in.
    broker = BrokerProcess(
        BrokerSettings(
            data_dir=restored.broker.data_dir,
            admin_username=restored.broker.admin_username,
            admin_password=restored.broker.admin_password.get_secret_value(),
            port=port,
        )
    )
    broker.start()
    try:
        device_id, password = populated
        device = Peer(Broker(broker), device_id, password)
        wrong = Peer(Broker(broker), device_id, "not-its-password")
        try:
            assert device.refused is None
            assert wrong.refused is not None
        finally:
            device.close()
            wrong.close()
    finally:
        broker.stop()


def test_the_command_line_backs_up_and_restores(
    populated: tuple[str, str], settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "cli.tar.gz"
    assert (
        console_main(["--instance", str(settings.instance_dir), "backup", "--out", str(archive)])
        == 0
    )
    assert "keep it private" in capsys.readouterr().out
    target = tmp_path / "cli-restored"
    args = ["--instance", str(target), "restore", str(archive), "--broker-port", str(free_port()),
            "--database-url", f"sqlite:///{target.resolve() / 'console.sqlite3'}"]  # fmt: skip
    assert console_main(args) == 0
    assert "restored" in capsys.readouterr().out
    # A second restore into the same directory is refused: it would mix two instances.
    assert console_main(args) == 1
    assert "already has an instance" in capsys.readouterr().err


def _rewrite(archive: Path, out: Path, change: dict[str, bytes]) -> None:
    """A copy of the archive with some members' contents replaced (manifest unchanged)."""
    with tarfile.open(archive, "r:gz") as src, tarfile.open(out, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            data = change.get(member.name, data)
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))


@pytest.mark.parametrize("damage", ["truncated", "altered_table", "not_a_backup", "traversal"])
def test_a_damaged_backup_is_refused_and_nothing_is_written(
    populated: tuple[str, str], settings: Settings, tmp_path: Path, damage: str
) -> None:
    good = tmp_path / "good.tar.gz"
    create_backup(settings, good)
    bad = tmp_path / "bad.tar.gz"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "altered_table":
        _rewrite(good, bad, {"tables/schedules.jsonl": b'{"id": 999}\n'})
    elif damage == "not_a_backup":
        bad.write_bytes(gzip.compress(b"just some text, not a tar"))
    else:
        with tarfile.open(bad, "w:gz") as tar:
            data = b"evil"
            info = tarfile.TarInfo("../escaped.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    target = tmp_path / "target"
    with pytest.raises(BackupError):
        restore_backup(bad, target, database_url=f"sqlite:///{target.resolve() / 'db.sqlite3'}")
    assert not (target / "config.toml").exists()
    assert not (target / "db.sqlite3").exists()
    assert not (tmp_path / "escaped.txt").exists()


def test_a_restore_into_a_database_that_has_data_is_refused_and_undone(
    populated: tuple[str, str], settings: Settings, tmp_path: Path
) -> None:
    archive = tmp_path / "b.tar.gz"
    create_backup(settings, archive)
    target = tmp_path / "t"
    url = f"sqlite:///{target.resolve() / 'c.sqlite3'}"
    restore_backup(archive, target, database_url=url, broker_port=free_port())
    first = dump(url)
    second = tmp_path / "t2"
    with pytest.raises(BackupError, match="not empty"):
        restore_backup(archive, second, database_url=url)  # the first restore's database
    assert not (second / "config.toml").exists()
    assert dump(url) == first  # the database already there is untouched


def test_the_tls_files_travel_with_the_backup_and_logins_do_not(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    """Devices trust the instance's CA: a restored instance must keep it (and its key, to
    renew the server certificate). Logins are not carried: staff log in again."""
    write_config(settings)
    files = TlsFiles(settings.instance_dir / TLS_DIR)
    issue_server_certificate(files, ["localhost", "127.0.0.1"])
    with_tls = add_tls_section(
        settings.instance_dir,
        {"ca_file": str(files.ca_cert), "cert_file": str(files.cert),
         "key_file": str(files.key), "broker_port": 0},
    )  # fmt: skip
    with db.session() as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        session.add(WebSession(key_sha256="ab" * 32, user_id=admin.id))
    archive = tmp_path / "tls.tar.gz"
    manifest = create_backup(with_tls, archive)
    assert {f"tls/{p.name}" for p in files.directory.iterdir()} <= set(manifest["sha256"])

    target = tmp_path / "tls-restored"
    url = f"sqlite:///{target.resolve() / 'console.sqlite3'}"
    restore_backup(archive, target, database_url=url, broker_port=free_port())
    restored = load_settings(target)
    assert restored.tls is not None
    here = target.resolve() / TLS_DIR
    for before, after in [
        (files.ca_cert, restored.tls.ca_file),
        (files.cert, restored.tls.cert_file),
        (files.key, restored.tls.key_file),
        (files.ca_key, here / files.ca_key.name),
    ]:
        assert after.parent == here and after.read_bytes() == before.read_bytes()
    assert restored.tls.key_file.stat().st_mode & 0o077 == 0
    assert dump(restored.database_url)["web_sessions"] == []
