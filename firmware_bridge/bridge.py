"""Composition root of one bridge: profile + config -> core, adapters and threads."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from device_profiles.profiles import DeviceProfile, load_profile
from firmware_bridge.cache import AudioCache
from firmware_bridge.config import BridgeConfig
from firmware_bridge.core import BridgeCore, CommandPayload, ConfigPayload, LinkUp, Ports, Shutdown
from firmware_bridge.diagnostics import SystemDiagnostics
from firmware_bridge.fire_adapters import FirePointAdapters, build_fire_point_adapters
from firmware_bridge.link import MqttLink
from firmware_bridge.player import AlsaPlayer, SimulatedPlayer
from firmware_bridge.ports import Clock, Player, SystemClock
from firmware_bridge.relay import GpioRelay

log = logging.getLogger(__name__)


@dataclass
class Bridge:
    """One device: start() brings it up, stop() leaves the amplifier off and says offline."""

    config: BridgeConfig
    profile: DeviceProfile
    core: BridgeCore
    link: MqttLink
    relay: GpioRelay | None
    cache: AudioCache
    player: Player
    pin_factory: Any
    fire_point: FirePointAdapters | None = None  # siren, inputs, serial link (fire points)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.core.run, name=f"core-{self.config.device_id}", daemon=True
        )
        self._thread.start()
        if self.fire_point is not None:
            self.fire_point.start()
        self.link.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        try:
            if self._thread is not None:
                self.core.post(Shutdown())
                self._thread.join(timeout_s)
            self.link.stop()
        finally:
            if self.fire_point is not None:
                self.fire_point.close()  # the siren ends up off
            if self.relay is not None:
                self.relay.close()
            self.cache.close()

    @property
    def counters(self) -> dict[str, int]:
        return dict(self.core.counters)


def build_bridge(
    config: BridgeConfig,
    *,
    simulate: bool,
    clock: Clock | None = None,
    pin_factory: Any = None,
) -> Bridge:
    """Wire a bridge; simulate=True uses gpiozero's MockFactory and the simulated player."""
    profile = load_profile(config.profile)
    clock = clock or SystemClock()
    if simulate and pin_factory is None:
        from gpiozero.pins.mock import MockFactory

        pin_factory = MockFactory()
    relay = (
        GpioRelay(profile.gpio.amplifier, pin_factory)
        if profile.has_speaker and profile.gpio.amplifier is not None
        else None
    )
    player: Player
    if simulate or (profile.audio is not None and profile.audio.player == "simulated"):
        player = SimulatedPlayer()
    else:
        player = AlsaPlayer(profile.audio.alsa_device if profile.audio else "default")
    cache = AudioCache(
        config.cache.dir,
        config.cache.budget_mb * 1024 * 1024,
        auth=config.media_auth(),
        ca_file=config.media_ca(),
    )
    core_ref: list[BridgeCore] = []

    def post(event: Any) -> None:
        core_ref[0].post(event)

    link = MqttLink(
        config.device_id,
        config.mqtt,
        config.zones,
        clock,
        outbox_path=config.state_dir / "outbox.sqlite3",
        on_command=lambda topic, payload: post(CommandPayload(topic, payload)),
        on_config=lambda payload: post(ConfigPayload(payload)),
        on_connected=lambda: post(LinkUp()),
    )
    diagnostics = SystemDiagnostics(config.state_dir, [link.counters])
    fire_point = None
    if profile.has_fire_point:
        fire_point = build_fire_point_adapters(
            profile, post, clock, pin_factory, simulate=simulate
        )
        diagnostics.add_counter_source(fire_point.counters)
    core = BridgeCore(
        config.device_id,
        profile,
        config.zones,
        Ports(
            link=link,
            player=player,
            relay=relay,
            fetcher=cache,
            diagnostics=diagnostics,
            siren=fire_point.siren if fire_point is not None else None,
        ),
        clock,
    )
    core_ref.append(core)
    return Bridge(
        config, profile, core, link, relay, cache, player, pin_factory, fire_point=fire_point
    )
