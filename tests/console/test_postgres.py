"""The same console on PostgreSQL: the schema Alembic makes there, times, JSON and text stored
and read back, the whole migration history both ways, and the suite's own database fixtures.

Most of the console's tests run on both backends (see tests/console/conftest.py); these check
what is specific to PostgreSQL, against the server tests/postgres.py starts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import StatementError

from console.db import Database, alembic_config, upgrade
from console.models import AudioFile, AuditEntry, Base, Schedule, User, Zone, ZoneKind
from console.settings import load_settings, write_new_instance
from tests.postgres import PostgresServer

HCM = timezone(timedelta(hours=7))


def test_each_database_test_gets_its_own_backend(database_backend: str, db: Database) -> None:
    assert db.engine.dialect.name == database_backend
    with db.session() as session:  # migrated, with the suite's three accounts only
        assert sorted(session.scalars(select(User.username))) == ["admin", "operator", "viewer"]


def test_the_server_runs_unprivileged_on_loopback(postgres_server: PostgresServer) -> None:
    status = Path(f"/proc/{postgres_server.process.pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    assert uid != 0  # PostgreSQL refuses root; as root the suite runs it as nobody
    with postgres_server.admin() as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)


@pytest.fixture
def pg(postgres_server: PostgresServer) -> Iterator[Database]:
    """A database of its own on the PostgreSQL server, migrated from the template."""
    name = f"pg_{uuid.uuid4().hex[:12]}"
    database = Database(postgres_server.create_database(name, template="loa_template"))
    yield database
    database.dispose()
    postgres_server.drop_database(name)


def test_the_migrated_schema_matches_the_models(pg: Database) -> None:
    with pg.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_every_migration_goes_down_and_up_again(postgres_server: PostgresServer) -> None:
    name = f"updown_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    try:
        config = alembic_config(url)
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        engine = create_engine(url)
        with engine.connect() as conn:
            tables = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
            assert set(tables) <= {"alembic_version"}
        engine.dispose()
        upgrade(url)
        upgrade(url)  # idempotent
    finally:
        postgres_server.drop_database(name)


def test_times_are_the_same_instant_whatever_the_session_time_zone(pg: Database) -> None:
    """UTC in, UTC out, even for a connection whose TimeZone is the site's."""
    at = datetime(2030, 1, 1, 23, 30, 15, 123456, tzinfo=HCM)
    with pg.session() as session:
        session.execute(text("SET TIME ZONE 'Asia/Ho_Chi_Minh'"))
        session.add(AuditEntry(at=at, username="", action="test", target="t", detail={}))
    with pg.session() as session:
        session.execute(text("SET TIME ZONE 'America/New_York'"))
        stored = session.scalar(select(AuditEntry.at).where(AuditEntry.action == "test"))
        assert stored == at and stored is not None and stored.tzinfo is not None
        assert stored.utcoffset() == timedelta(0)
        since = datetime(2030, 1, 1, 16, 30, tzinfo=UTC)  # compared as instants, in SQL
        found = session.scalar(select(AuditEntry.id).where(AuditEntry.at >= since))
        assert found is not None


def test_a_naive_time_is_refused_not_guessed(pg: Database) -> None:
    with pytest.raises(StatementError, match="naive datetime"), pg.session() as session:
        session.add(AuditEntry(at=datetime(2030, 1, 1), username="", action="x", detail={}))
        session.flush()


def test_json_and_vietnamese_text_come_back_as_stored(pg: Database) -> None:
    name = "Thông báo lịch tiêm phòng — Thôn Đông <b>&</b> 'ấp' \"Cả\""
    rule = {"kind": "recurring", "frequency": "weekly", "days": ["mon"], "times": ["07:00"]}
    with pg.session() as session:
        session.add(Zone(id="xa-pg", name="Xã Phú Gia", kind=ZoneKind.COMMUNE))
        session.add(
            AudioFile(
                sha256="a" * 64, name=name, original_name="a.mp3", duration_ms=1000,
                size_bytes=10, mime="audio/mpeg",
            )
        )  # fmt: skip
        session.flush()
        session.add(
            Schedule(name=name, audio_sha256="a" * 64, rule=rule, zone_ids=["xa-pg", "thôn-đ"])
        )
    with pg.session() as session:
        schedule = session.scalars(select(Schedule)).one()
        assert (schedule.name, schedule.rule, schedule.zone_ids) == (
            name, rule, ["xa-pg", "thôn-đ"],
        )  # fmt: skip
        assert session.scalar(select(Zone.name).where(Zone.id == "xa-pg")) == "Xã Phú Gia"
        assert session.scalar(select(AudioFile.name)) == name


def test_database_url_in_the_environment_wins_over_the_file(
    tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How a production instance is pointed at PostgreSQL without editing config.toml."""
    instance = tmp_path / "inst"
    written = write_new_instance(instance, broker_port=1883, web_port=8080)
    assert written.database_url.startswith("sqlite:")
    monkeypatch.setenv("DATABASE_URL", postgres_server.url("loa_template"))
    assert load_settings(instance).database_url == postgres_server.url("loa_template")
