"""The devices and zones page, and the words of the live board (board.js, devices.js).

Both pages get everything else from /api/v1; their words come translated here, in a JSON
block of the page, so the scripts never hold a sentence of their own.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from flask_babel import gettext as _
from flask_login import current_user

from console.auth import require_role
from console.device_status import CLOCK_DRIFT_MS, CPU_HOT_C, DISK_LOW_MB
from console.models import Role
from device_profiles import ProfileError, list_profiles, load_profile

bp = Blueprint("devices", __name__)


def signal_labels() -> dict[str, str]:
    """What each fault or fire-point signal is called (an unknown one shows its own name)."""
    return {
        "call_point": _("Fire call point pressed"),
        "cabinet_open": _("Cabinet open"),
        "pressure_low": _("Pressure low"),
        "temperature_high": _("Cabinet too hot"),
        "mains_lost": _("Mains power lost"),
        "battery_low": _("Battery low"),
        "sensor_silent": _("Sensors not reporting"),
        "serial_link_lost": _("Fire-point controller not connected"),
        "disk_low": _("Storage almost full (under %(mb)d MB)", mb=int(DISK_LOW_MB)),
        "clock_drift": _("Clock off by more than %(s)d s", s=CLOCK_DRIFT_MS // 1000),
        "overheating": _("Overheating (%(c)d °C or more)", c=int(CPU_HOT_C)),
    }


def common_texts() -> dict[str, Any]:
    return {
        "online": _("Online"),
        "offline": _("Offline"),
        "never_seen": _("Never connected"),
        "no_devices": _("No devices match."),
        "loading": _("Loading…"),
        "load_failed": _("Could not load the devices: %(error)s"),
        "page": _("Page %(page)d of %(pages)d · %(total)d devices"),
        "kinds": {"commune": _("Commune"), "hamlet": _("Hamlet"), "cluster": _("Cluster")},
        "signals": signal_labels(),
    }


def board_texts() -> dict[str, Any]:
    """The live board's words (board.js)."""
    return {
        **common_texts(),
        "live": _("Live: updates as devices report"),
        "connecting": _("Connecting…"),
        "reconnecting": _("Connection lost, reconnecting…"),
        "amp_on": _("On"),
        "amp_off": _("Off"),
        "none": _("None"),
        "emergency": _("Emergency"),
        "fire_states": {
            "normal": _("All clear"),
            "alarm": _("FIRE ALARM"),
            "supervisory": _("Needs checking"),
            "trouble": _("Fault"),
        },
        "columns": {
            "device": _("Device"),
            "zone": _("Zone"),
            "connection": _("Connection"),
            "playing": _("Playing"),
            "volume": _("Volume"),
            "amplifier": _("Amplifier"),
            "faults": _("Faults"),
            "fire_point": _("Fire point"),
        },
    }


def profile_options() -> list[dict[str, Any]]:
    """The device profiles the console knows, named by what each can do."""
    options = []
    for name in list_profiles():
        try:
            profile = load_profile(name)
        except ProfileError:
            continue  # a broken profile file cannot be registered anyway
        if profile.has_speaker and profile.has_fire_point:
            does = _("Loudspeaker and fire point")
        elif profile.has_fire_point:
            does = _("Fire point")
        else:
            does = _("Loudspeaker")
        options.append({"name": name, "label": f"{does} ({name})"})
    return options


def devices_texts() -> dict[str, Any]:
    """The devices page's words (devices.js)."""
    return {
        **common_texts(),
        "all_zones": _("All zones"),
        "devices_count": _("%(n)d devices"),
        "no_zones": _("No zones yet. An administrator adds the commune first."),
        "profiles": {o["name"]: o["label"] for o in profile_options()},
        "edit": _("Edit"),
        "new_secret": _("New secret"),
        "decommission": _("Decommission"),
        "saved": _("Saved."),
        "zone_added": _("Zone “%(name)s” added."),
        "registered": _("Device “%(name)s” registered."),
        "decommissioned": _("Device “%(name)s” decommissioned: it can no longer connect."),
        "confirm_decommission": _(
            "Decommission “%(name)s” (%(id)s)? Its login to the broker is revoked at once and "
            "it leaves the live board, the device lists and every new broadcast. Its delivery "
            "and alarm history is kept and still names it. This cannot be undone: to use it "
            "again, register it again with the same id."
        ),
        "confirm_revive": _(
            "“%(id)s” was decommissioned on %(when)s. Put it back in service as “%(name)s”, "
            "with a new secret? Its history is kept."
        ),
        "revive": _("Put back in service"),
        "revived": _("Device “%(name)s” is back in service."),
        "confirm_secret": _(
            "Give “%(name)s” a new secret? The file on the device stops working at once: "
            "install the new file on it."
        ),
        "config_title": _("Config file of “%(id)s”"),
        "parent_for": {
            "hamlet": _("In commune"),
            "cluster": _("In hamlet"),
        },
        "none_location": _("No location"),
        "columns": {
            "zone": _("Zone"),
            "type": _("Type"),
            "connection": _("Connection"),
            "location": _("Location"),
        },
    }


@bp.get("/devices")
@require_role(Role.VIEWER)
def page() -> str:
    return render_template(
        "devices.html",
        texts=devices_texts(),
        profiles=profile_options(),
        is_admin=current_user.can(Role.ADMIN),
    )
