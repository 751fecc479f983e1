"""Backup and restore of a console instance: database, audio, broker accounts, settings.

One .tar.gz holds everything a fresh machine needs to carry on:

- `manifest.json`: format, schema revision, when, row counts, and the sha256 of every
  other member (a restore checks them all before it writes anything);
- `config.toml`: the instance settings with their secrets (keep backups private);
- `tables/<table>.jsonl`: every row of every table, one JSON object a line. The dump is
  backend-neutral, so a SQLite instance restores into PostgreSQL and back;
- `media/…`: the content-addressed audio files;
- `broker/dynamic-security.json` and `broker/mosquitto.db`: the devices' broker accounts
  (hashed passwords, roles) and the broker's retained messages;
- `tls/…`: the instance's CA and server certificate with their keys, when TLS is on (the
  devices trust that CA: a new one would cut every device off).

Logins (web_sessions) are not carried: after a restore, staff log in again.

The database is read in one transaction (a consistent snapshot on both backends) while
the console keeps running. A restore goes into a new instance directory only; it brings
the schema to the backup's revision, loads the rows, then upgrades to the newest schema,
so a backup made by an older version restores into a newer one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import tomllib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path, PurePosixPath
from typing import IO, Any

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import Engine, MetaData, Table, delete, insert, select, text, update
from sqlalchemy import types as sqltypes
from sqlalchemy.exc import SQLAlchemyError

from console.db import alembic_config, make_engine
from console.settings import CONFIG_NAME, Settings, load_settings, write_instance_config

FORMAT = "tieng-loa-backup/1"
BATCH = 1000
SKIP_TABLES = {"alembic_version", "web_sessions"}
# A database with rows in any of these is in use: a restore never writes into it.
IN_USE_TABLES = {"users", "zones", "devices", "audio_files", "broadcasts"}


class BackupError(RuntimeError):
    """A backup that cannot be made or restored as asked (the message says why)."""


# What a backup's contents can make the restore raise (rows that are not rows, an unknown
# schema revision, settings that do not validate): each becomes a BackupError.
RESTORE_FAILURES = (
    ValueError, TypeError, LookupError, ArithmeticError, RecursionError, SQLAlchemyError,
    CommandError,
)  # ArithmeticError: sqlite3's OverflowError for an integer beyond 64 bits


@dataclass(frozen=True)
class RestoreResult:
    instance_dir: Path
    revision: str
    rows: dict[str, int]
    media_files: int


# --- values --------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    return value


def _decoder(column_type: sqltypes.TypeEngine[Any], naive_utc: bool) -> Any:
    """How a dumped value goes back into a column of this (reflected) type."""
    if isinstance(column_type, sqltypes.DateTime):

        def as_datetime(v: str) -> datetime:
            parsed = datetime.fromisoformat(v)
            parsed = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
            parsed = parsed.astimezone(UTC)
            return parsed.replace(tzinfo=None) if naive_utc else parsed

        return as_datetime
    if isinstance(column_type, sqltypes.Date):
        return date.fromisoformat
    if isinstance(column_type, sqltypes.Time):
        return time.fromisoformat
    return None


def _reflect(engine: Engine) -> list[Table]:
    metadata = MetaData()
    metadata.reflect(engine)
    return [t for t in metadata.sorted_tables if t.name not in SKIP_TABLES]


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


# --- backup --------------------------------------------------------------------------------


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, sums: dict[str, str]) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(datetime.now(UTC).timestamp())
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))
    sums[name] = hashlib.sha256(data).hexdigest()


def _add_file(tar: tarfile.TarFile, name: str, path: Path, sums: dict[str, str]) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    tar.add(path, arcname=name, recursive=False)
    sums[name] = digest.hexdigest()


def _table_lines(conn: Any, table: Table) -> Iterator[bytes]:
    order = list(table.primary_key.columns) or list(table.columns)
    result = conn.execute(select(table).order_by(*order)).mappings()
    for row in result:
        record = {k: _encode(v) for k, v in row.items()}
        yield (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def create_backup(settings: Settings, out: Path) -> dict[str, Any]:
    """Write the instance's backup to `out` (atomically); returns its manifest."""
    out.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    sums: dict[str, str] = {}
    rows: dict[str, int] = {}
    fd, tmp_name = tempfile.mkstemp(prefix=".backup-", suffix=".tmp", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            config = settings.instance_dir / CONFIG_NAME
            if config.is_file():
                _add_file(tar, "config.toml", config, sums)
            with engine.connect() as conn, conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
                revision = MigrationContext.configure(conn).get_current_revision()
                if revision is None:
                    raise BackupError("the database has no schema: run `python -m console migrate`")
                for table in _reflect(engine):
                    data = b"".join(_table_lines(conn, table))
                    rows[table.name] = data.count(b"\n")
                    _add_bytes(tar, f"tables/{table.name}.jsonl", data, sums)
            media = 0
            if settings.media_dir.is_dir():
                for path in sorted(settings.media_dir.rglob("*")):
                    if path.is_file() and not path.name.startswith("."):
                        rel = path.relative_to(settings.media_dir).as_posix()
                        _add_file(tar, f"media/{rel}", path, sums)
                        media += 1
            for name in ("dynamic-security.json", "mosquitto.db"):
                path = settings.broker.data_dir / name
                if path.is_file():
                    _add_file(tar, f"broker/{name}", path, sums)
            if settings.tls is not None:
                for name in _tls_names(settings):
                    _add_file(tar, f"tls/{name}", settings.tls.cert_file.parent / name, sums)
            manifest = {
                "format": FORMAT,
                "created_at": datetime.now(UTC).isoformat(),
                "database_backend": engine.dialect.name,
                "schema_revision": revision,
                "rows": rows,
                "media_files": media,
                "sha256": sums,
            }
            _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=1).encode(), {})
        os.chmod(tmp, 0o600)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        engine.dispose()
    return manifest


TLS_FILE_KEYS = ("ca_file", "cert_file", "key_file")


def _tls_names(settings: Settings) -> list[str]:
    """The files of the instance's TLS directory: the CA (with its key, to renew the server
    certificate) and the server certificate and key."""
    assert settings.tls is not None
    directory = settings.tls.cert_file.parent
    names = {settings.tls.ca_file.name, settings.tls.cert_file.name, settings.tls.key_file.name}
    names |= {p.name for p in directory.glob("*") if p.is_file() and not p.name.startswith(".")}
    return sorted(n for n in names if (directory / n).is_file())


# --- restore -------------------------------------------------------------------------------


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BackupError(f"the backup holds an unsafe path: {name!r}")
    return path


def _open_checked(archive: Path, work: Path) -> dict[str, Any]:
    """Unpack into `work`, checking every member against the manifest; the manifest."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _safe_name(member.name)
                if not member.isfile():
                    raise BackupError(
                        f"the backup holds something that is not a file: {member.name}"
                    )
            tar.extractall(work, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:  # zlib: a corrupt gzip
        raise BackupError(f"{archive.name} is not a readable backup: {exc}") from None
    manifest_path = work / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise BackupError(f"{archive.name} has no readable manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BackupError(f"{archive.name} is not a backup of this console ({found!r})")
    expected: dict[str, str] = manifest.get("sha256", {})
    if not isinstance(expected, dict) or not all(isinstance(v, str) for v in expected.values()):
        raise BackupError(f"{archive.name} has a damaged manifest (sha256)")
    if not isinstance(manifest.get("schema_revision"), str):
        raise BackupError(f"{archive.name} has a damaged manifest (schema_revision)")
    present = {p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file()} - {
        "manifest.json"
    }
    if present != set(expected):
        missing = sorted(set(expected) - present)[:3]
        extra = sorted(present - set(expected))[:3]
        raise BackupError(
            f"{archive.name} is incomplete or altered (missing {missing}, extra {extra})"
        )
    for name, digest in expected.items():
        h = hashlib.sha256()
        with (work / name).open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != digest:
            raise BackupError(f"{archive.name}: {name} is corrupt (checksum mismatch)")
    return manifest


def _decode(record: dict[str, Any], decoders: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise BackupError(f"a table row is not a JSON object: {str(record)[:80]}")
    for key, value in record.items():
        decode = decoders.get(key)
        if decode is not None and isinstance(value, str):
            record[key] = decode(value)
    return record


def _self_references(table: Table) -> list[tuple[str, str]]:
    """(column, referred column) of each foreign key from a table to itself."""
    return [
        (fk.parent.name, fk.column.name)
        for fk in table.foreign_keys
        if fk.column.table.name == table.name
    ]


def _parents_first(
    records: list[dict[str, Any]], refs: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    done: set[tuple[str, Any]] = set()
    ordered: list[dict[str, Any]] = []
    pending = records
    while pending:
        later = []
        for record in pending:
            if all(record.get(col) is None or (ref, record[col]) in done for col, ref in refs):
                ordered.append(record)
                done.update((ref, record.get(ref)) for _col, ref in refs)
            else:
                later.append(record)
        if len(later) == len(pending):
            raise BackupError("the backup's rows refer to parents it does not hold")
        pending = later
    return ordered


def _load_rows(engine: Engine, tables_dir: Path) -> dict[str, int]:
    naive = engine.dialect.name == "sqlite"
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        tables = _reflect(engine)
        for table in tables:
            if table.name in IN_USE_TABLES and conn.execute(select(table).limit(1)).first():
                raise BackupError(f"the target database is not empty (table {table.name})")
        for table in reversed(tables):  # rows the migrations seed: the backup has its own
            conn.execute(delete(table))
        for table in tables:
            path = tables_dir / f"{table.name}.jsonl"
            counts[table.name] = 0
            if not path.exists():
                continue
            decoders = {c.name: _decoder(c.type, naive) for c in table.columns}
            self_refs = _self_references(table)
            batch: list[dict[str, Any]] = []
            with path.open(encoding="utf-8") as fh:
                records: Iterator[dict[str, Any]] = (
                    _decode(json.loads(line), decoders) for line in fh
                )
                if self_refs:  # parents before children (e.g. a commune before its hamlets)
                    records = iter(_parents_first(list(records), self_refs))
                for record in records:
                    batch.append(record)
                    if len(batch) >= BATCH:
                        conn.execute(insert(table), batch)
                        counts[table.name] += len(batch)
                        batch = []
            if batch:
                conn.execute(insert(table), batch)
                counts[table.name] += len(batch)
        if engine.dialect.name == "postgresql":  # ids inserted as given: move sequences on
            for table in _reflect(engine):
                if "id" in table.columns and isinstance(table.c.id.type, sqltypes.Integer):
                    conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                            f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
                        )
                    )
    return counts


def restore_backup(
    archive: Path,
    instance_dir: Path,
    *,
    database_url: str | None = None,
    broker_port: int | None = None,
    web_port: int | None = None,
) -> RestoreResult:
    """Restore `archive` into a new instance directory (refused if it has a config)."""
    if (instance_dir / CONFIG_NAME).exists():
        raise BackupError(
            f"{instance_dir} already has an instance: restore into a new, empty directory"
        )
    with tempfile.TemporaryDirectory(prefix="loa-restore-") as tmp:
        work = Path(tmp)
        manifest = _open_checked(archive, work)
        if not (work / "config.toml").is_file():
            raise BackupError(f"{archive.name} holds no instance settings (config.toml)")
        try:
            config = tomllib.loads((work / "config.toml").read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as exc:  # not UTF-8, not TOML, nested too deep
            raise BackupError(
                f"{archive.name}: its settings (config.toml) are unreadable: {exc}"
            ) from None
        if not isinstance(config.get("broker", {}), dict):
            raise BackupError(f"{archive.name}: its settings (config.toml) have no [broker] table")
        root = instance_dir.resolve()
        if database_url is None:
            if not str(config.get("database_url", "")).startswith("sqlite"):
                raise BackupError(
                    "the backup came from PostgreSQL: give the new database's URL "
                    "(--database-url), an empty database"
                )
            database_url = f"sqlite:///{root / 'console.sqlite3'}"
        config["database_url"] = database_url
        config["media_dir"] = str(root / "media")
        if web_port is not None:
            config["web_port"] = web_port
        broker = dict(config.get("broker", {}))
        broker["data_dir"] = str(root / "broker")
        if broker_port is not None:
            broker["port"] = broker_port
        config["broker"] = broker
        tls = config.get("tls")
        if isinstance(tls, dict):  # the certificates move with the instance
            config["tls"] = {
                k: str(root / "tls" / Path(str(v)).name) if k in TLS_FILE_KEYS else v
                for k, v in tls.items()
            }

        instance_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(instance_dir, 0o700)
        revision = str(manifest["schema_revision"])
        created_db = _sqlite_file(database_url)
        if created_db is not None and created_db.exists():
            created_db = None  # not ours to remove if the restore fails
        try:
            rows = _restore_database(database_url, revision, work / "tables")
            count = _copy_tree(work / "media", root / "media")
            _copy_tree(work / "broker", root / "broker", private=True)
            _copy_tree(work / "tls", root / "tls", private=True)
            write_instance_config(instance_dir, config)  # last: marks a whole restore
        except RESTORE_FAILURES as exc:  # rows, schema or settings the console cannot take
            _undo(root, created_db)
            raise BackupError(f"{archive.name} cannot be restored: {exc}") from None
        except BaseException:
            _undo(root, created_db)
            raise
    load_settings(instance_dir)  # the restored settings must load
    return RestoreResult(instance_dir, revision, rows, count)


def _restore_database(database_url: str, revision: str, tables_dir: Path) -> dict[str, int]:
    """Schema at the backup's revision, its rows, then the newest schema."""
    cfg = alembic_config(database_url)
    engine = make_engine(database_url)
    try:
        current = _revision(engine)
        if current is not None and current != revision:
            raise BackupError("the target database already has a schema: give an empty one")
        command.upgrade(cfg, revision)
        rows = _load_rows(engine, tables_dir)
        command.upgrade(cfg, "head")
        configs = Table("device_configs", MetaData(), autoload_with=engine)
        with engine.begin() as conn:  # the new broker gets every retained config again
            conn.execute(update(configs).values(published_version=None))
        return rows
    finally:
        engine.dispose()


def _copy_tree(src: Path, dest: Path, *, private: bool = False) -> int:
    count = 0
    if not src.is_dir():
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    if private:
        os.chmod(dest, 0o700)
    for path in src.rglob("*"):
        if path.is_file():
            target = dest / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            if private:
                os.chmod(target, 0o600)
            count += 1
    return count


def _sqlite_file(database_url: str) -> Path | None:
    return (
        Path(database_url.removeprefix("sqlite:///"))
        if database_url.startswith("sqlite:///")
        else None
    )


def _undo(root: Path, created_db: Path | None) -> None:
    """Remove what a failed restore wrote into the new instance directory (a database
    file only if the restore created it)."""
    shutil.rmtree(root / "media", ignore_errors=True)
    shutil.rmtree(root / "broker", ignore_errors=True)
    shutil.rmtree(root / "tls", ignore_errors=True)
    (root / CONFIG_NAME).unlink(missing_ok=True)  # written last, but its check may fail
    if created_db is not None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{created_db}{suffix}").unlink(missing_ok=True)


def describe(manifest: dict[str, Any], out: IO[str]) -> None:
    """A short human summary of a backup's manifest."""
    rows = manifest.get("rows", {})
    out.write(
        f"backup of {manifest.get('created_at')} (schema {manifest.get('schema_revision')}, "
        f"{manifest.get('database_backend')}): {sum(rows.values())} rows in {len(rows)} tables, "
        f"{manifest.get('media_files', 0)} audio files\n"
    )
