"""The backup reader (console/backup.py restore_backup): an archive that is damaged, cut
short, not a backup at all, or crafted (members changed and their checksums made to match:
a manifest that is not an object, settings that are not TOML, rows that are not rows, an
unknown schema, paths that leave the folder) is refused with BackupError, and the new
instance folder gets no settings and no database."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import tarfile
import warnings
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy.exc import SAWarning

from console.backup import BackupError, create_backup, restore_backup
from console.db import Database
from console.models import Zone, ZoneKind
from console.settings import Settings, write_instance_config
from tests.fuzz.strategies import json_values, mutated, to_json_bytes
from tests.fuzz.tally import Tally, fuzz_settings


def pack(members: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return out.getvalue()


def with_sums(members: dict[str, bytes]) -> dict[str, bytes]:
    """The manifest's checksums made to match the (changed) members, as a forger would."""
    try:
        manifest = json.loads(members["manifest.json"])
    except (ValueError, KeyError):
        return members
    if isinstance(manifest, dict) and isinstance(manifest.get("sha256"), dict):
        manifest["sha256"] = {
            n: hashlib.sha256(d).hexdigest() for n, d in members.items() if n != "manifest.json"
        }
        members = {**members, "manifest.json": json.dumps(manifest).encode()}
    return members


def write_config(settings: Settings) -> None:
    """The instance's config.toml, as `make run` writes it (the fixtures build settings only)."""
    values: dict[str, Any] = settings.model_dump(
        mode="json", exclude={"broker", "instance_dir"}, exclude_none=True
    )
    values["secret_key"] = settings.secret_key.get_secret_value()
    broker = settings.broker.model_dump(mode="json")
    broker["admin_password"] = settings.broker.admin_password.get_secret_value()
    broker["console_password"] = settings.broker.console_password.get_secret_value()
    values["broker"] = broker
    write_instance_config(settings.instance_dir, values)


@pytest.fixture
def good_members(settings: Settings, db: Database, tmp_path: Path) -> dict[str, bytes]:
    with db.session() as s:
        s.add(Zone(id="xa-bk", name="Xã Sao Lưu", kind=ZoneKind.COMMUNE))
        s.add(Zone(id="thon-bk", name="Thôn Một", kind=ZoneKind.HAMLET, parent_id="xa-bk"))
    write_config(settings)
    archive = tmp_path / "good.tar.gz"
    create_backup(settings, archive)
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


@st.composite
def crafted(draw: st.DrawFn, good: dict[str, bytes]) -> bytes:
    kind = draw(st.sampled_from(["bytes", "cut", "flip", "member", "manifest", "rows", "names"]))
    whole = pack(good)
    if kind == "bytes":
        return draw(st.binary(max_size=2000))
    if kind == "cut":
        return whole[: draw(st.integers(0, len(whole) - 1))]
    if kind == "flip":
        at = draw(st.integers(0, len(whole) - 1))
        return whole[:at] + bytes([whole[at] ^ (1 << draw(st.integers(0, 7)))]) + whole[at + 1 :]
    members = dict(good)
    if kind == "member":
        name = draw(st.sampled_from(sorted(members)))
        members[name] = draw(st.one_of(st.binary(max_size=300), json_values().map(to_json_bytes),
                                       st.just(b"x = " + b"[" * 3000), st.just(b"\xff\xfe")))  # fmt: skip
        return pack(with_sums(members))
    if kind == "manifest":
        manifest = json.loads(members["manifest.json"])
        members["manifest.json"] = to_json_bytes(draw(mutated(manifest, big=False)))
        return pack(members)
    if kind == "rows":
        tables = sorted(n for n in members if n.startswith("tables/") and members[n].strip())
        name = draw(st.sampled_from(tables))
        lines = members[name].splitlines()
        index = draw(st.integers(0, len(lines) - 1))
        row: Any = json.loads(lines[index])
        lines[index] = to_json_bytes(
            draw(mutated(row, big=False)) if isinstance(row, dict) else row
        )
        members[name] = b"\n".join(lines) + b"\n"
        return pack(with_sums(members))
    info = tarfile.TarInfo(
        draw(st.sampled_from(["../escaped.txt", "/abs/x", "media/../../x", "", "./", "a\x00b"]))
    )
    info.type = draw(
        st.sampled_from([tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE])
    )
    info.linkname = "/etc/passwd"
    info.size = 1 if info.type == tarfile.REGTYPE else 0
    return pack(good, [info])


def test_crafted_and_damaged_archives_are_refused(
    tally: Tally, good_members: dict[str, bytes], tmp_path: Path
) -> None:
    numbers = iter(range(10**9))
    not_a_dict = with_sums({**good_members, "manifest.json": b"[1, 2]"})
    bad_revision = json.loads(good_members["manifest.json"])
    bad_revision["schema_revision"] = "../../etc"

    @fuzz_settings(0.25)
    @given(archive=crafted(good_members))
    @example(archive=pack(not_a_dict))
    @example(archive=pack({**good_members, "manifest.json": json.dumps(bad_revision).encode()}))
    @example(archive=pack(with_sums({**good_members, "config.toml": b"broker = 5\n"})))
    @example(archive=pack(with_sums({**good_members, "config.toml": b"\xff\xfe"})))
    @example(archive=pack(with_sums({**good_members, "tables/zones.jsonl": b"[1]\n"})))
    @example(archive=pack(with_sums({**good_members, "tables/ingest_counters.jsonl":
                                     b'{"name": "x", "count": 99999999999999999999999}\n'})))  # fmt: skip
    def run(archive: bytes) -> None:
        n = next(numbers)
        path, target = tmp_path / f"a{n}.tar.gz", tmp_path / f"t{n}"
        path.write_bytes(archive)
        with tally.case("backup archive") as case:
            try:
                # As in production, SQLAlchemy's warnings about odd rows stay warnings (the
                # suite makes every warning an error); the database refuses such rows itself.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SAWarning)
                    restore_backup(
                        path, target, database_url=f"sqlite:///{target.resolve() / 'db.sqlite3'}"
                    )
            except BackupError as exc:
                assert str(exc)
                assert (
                    not (target / "config.toml").exists() and not (target / "db.sqlite3").exists()
                )
                case.refused()
            else:
                case.accepted()  # an unchanged archive (or one changed harmlessly) restores
        assert not (tmp_path / "escaped.txt").exists()

    run()
    # The good archive still restores.
    good = tmp_path / "good-again.tar.gz"
    good.write_bytes(pack(good_members))
    target = tmp_path / "restored"
    restore_backup(good, target, database_url=f"sqlite:///{target.resolve() / 'db.sqlite3'}")


def corrupt_after_the_start(members: dict[str, bytes]) -> bytes:
    """A gzip file whose first part is sound (tarfile opens it) and whose second part is a
    deflate block of the reserved type 3: zlib raises only while the members are read."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue()[:1024]) + gzip.compress(b"")[:10] + b"\x07" + bytes(32)


def test_every_bit_flip_near_the_start_is_refused(
    tally: Tally, good_members: dict[str, bytes], tmp_path: Path
) -> None:
    """The regression: a corrupt compressed stream past its start made zlib raise its own
    error (found as "invalid distance too far back" by flipping one bit), which escaped the
    restore as a traceback."""
    broken = corrupt_after_the_start(good_members)
    with pytest.raises(zlib.error), tarfile.open(fileobj=io.BytesIO(broken), mode="r:gz") as tar:
        tar.getmembers()
    whole = pack(good_members)
    # The compressed stream starts after gzip's 10-byte header: flip each bit of its start.
    flips = [whole[:at] + bytes([whole[at] ^ (1 << bit)]) + whole[at + 1 :]
             for at, bit in itertools.product(range(10, 40), range(8))]  # fmt: skip
    for n, archive in enumerate([broken, *flips]):
        path, target = tmp_path / f"flip{n}.tar.gz", tmp_path / f"t{n}"
        path.write_bytes(archive)
        with tally.case("backup archive") as case:
            try:
                restore_backup(path, target, database_url=f"sqlite:///{target / 'db.sqlite3'}")
            except BackupError:
                case.refused()
            else:
                case.accepted()  # a flip in a header field nobody reads
