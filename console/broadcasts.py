"""Sending a broadcast: record it with a pending delivery per device, then publish once per zone.

The broadcast id is the command id. Inserting it is the claim: a second sender with the same
id (a restarted or duplicated worker) hits the primary key and publishes nothing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from console.db import Database
from console.models import (
    AudioFile,
    Broadcast,
    BroadcastStatus,
    Delivery,
    DeliveryStatus,
)
from console.mqtt_link import ConsoleLink, LinkError
from console.zones import device_targets, minimal_cover, zone_parents
from device_profiles import ProfileError, load_profile, protocol

log = logging.getLogger(__name__)


class BroadcastError(ValueError):
    """A broadcast that cannot be sent as asked."""


@dataclass(frozen=True)
class BroadcastRequest:
    broadcast_id: str
    audio_sha256: str
    zone_ids: Sequence[str]
    priority: protocol.Priority
    fire_at: datetime  # aware UTC: when the command is sent
    play_lead: timedelta
    ttl: timedelta
    volume_pct: int | None = None
    gong: bool = False
    repeat: int = 1
    title: str = ""
    schedule_id: int | None = None
    scheduled_for: datetime | None = None
    created_by: int | None = None


@functools.cache
def has_speaker(profile_name: str) -> bool:
    try:
        return load_profile(profile_name).has_speaker
    except ProfileError:
        return True  # unknown hardware: expect an answer, so silence shows


def media_url(base_url: str, sha256: str) -> str:
    return f"{base_url.rstrip('/')}/media/{sha256}.mp3"


def _epoch_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def record_broadcast(session: Session, req: BroadcastRequest) -> Broadcast:
    """Insert the broadcast and a pending delivery for each device it should reach.

    Only the target zones' devices are read (id and profile), and their deliveries are
    inserted in one statement: a fire costs what its zones hold, not the whole fleet.
    """
    if not req.zone_ids:
        raise BroadcastError("choose at least one zone")
    audio = session.get(AudioFile, req.audio_sha256)
    if audio is None:
        raise BroadcastError(f"unknown audio {req.audio_sha256}")
    parents = zone_parents(session)
    cover = minimal_cover(req.zone_ids, parents)
    play_at = req.fire_at + req.play_lead
    broadcast = Broadcast(
        id=req.broadcast_id,
        schedule_id=req.schedule_id,
        audio_sha256=audio.sha256,
        priority=req.priority.value,
        zone_ids=cover,
        status=BroadcastStatus.SENT,
        scheduled_for=req.scheduled_for,
        fired_at=req.fire_at,
        play_at=play_at,
        expires_at=play_at + req.ttl,
        repeat=req.repeat,
        created_by=req.created_by,
    )
    session.add(broadcast)
    session.flush()  # the claim: a second sender of this id fails here, before any delivery
    rows = [
        {
            "broadcast_id": broadcast.id,
            "device_id": device.id,
            "status": DeliveryStatus.PENDING,
            "updated_at": req.fire_at,
        }
        for device in device_targets(session, cover, parents)
        # A fire point without a speaker is not expected to play.
        if has_speaker(device.profile)
    ]
    if rows:
        session.execute(insert(Delivery), rows)
    return broadcast


def build_command(
    broadcast: Broadcast, audio: AudioFile, req: BroadcastRequest, base_url: str
) -> protocol.PlayCommand:
    assert broadcast.play_at is not None and broadcast.expires_at is not None
    return protocol.PlayCommand(
        id=broadcast.id,
        ts=_epoch_ms(req.fire_at),
        priority=req.priority,
        audio=protocol.AudioRef(
            url=media_url(base_url, audio.sha256),
            sha256=audio.sha256,
            duration_ms=audio.duration_ms,
            bytes=audio.size_bytes,
        ),
        volume_pct=req.volume_pct,
        play_at=_epoch_ms(broadcast.play_at),
        expires_at=_epoch_ms(broadcast.expires_at),
        gong=req.gong,
        repeat=req.repeat,
        title=req.title[:200],
    )


def send_broadcast(
    db: Database, link: ConsoleLink, req: BroadcastRequest, base_url: str
) -> Broadcast | None:
    """Record and publish; None when this id was already sent (idempotent)."""
    try:
        # The write lock first: SQLite would otherwise refuse the insert of a transaction
        # that read before another connection wrote ("database is locked").
        with db.write_session() as session:
            broadcast = record_broadcast(session, req)
            audio = session.get(AudioFile, req.audio_sha256)
            assert audio is not None
            command = build_command(broadcast, audio, req, base_url)
            zones = list(broadcast.zone_ids)
    except IntegrityError:
        log.info("broadcast %s was already sent; not sending again", req.broadcast_id)
        return None
    try:
        link.publish_command(zones, command)
    except LinkError:
        _release_claim(db, req.broadcast_id)  # so that a retry can send it
        raise
    log.info("broadcast %s sent to zones %s", broadcast.id, ",".join(zones))
    return broadcast


def _release_claim(db: Database, broadcast_id: str) -> None:
    """Remove a recorded broadcast the broker never accepted (it reached no device)."""
    with db.write_session() as session:
        session.execute(delete(Delivery).where(Delivery.broadcast_id == broadcast_id))
        session.execute(delete(Broadcast).where(Broadcast.id == broadcast_id))


def record_missed(db: Database, req: BroadcastRequest) -> bool:
    """Record an occurrence that was not sent in time; False if it was already recorded."""
    try:
        with db.session() as session:
            session.add(
                Broadcast(
                    id=req.broadcast_id,
                    schedule_id=req.schedule_id,
                    audio_sha256=req.audio_sha256,
                    priority=req.priority.value,
                    zone_ids=list(req.zone_ids),
                    status=BroadcastStatus.MISSED,
                    scheduled_for=req.scheduled_for,
                    created_by=req.created_by,
                )
            )
    except IntegrityError:
        return False
    return True


def delivery_summary(session: Session, broadcast_id: str) -> dict[str, int]:
    """Count of devices per delivery status for one broadcast."""
    counts: dict[str, int] = {}
    for status in session.scalars(
        select(Delivery.status).where(Delivery.broadcast_id == broadcast_id)
    ):
        counts[status.value] = counts.get(status.value, 0) + 1
    return counts
