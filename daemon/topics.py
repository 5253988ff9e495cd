"""MQTT topic names, in one place. ``prefix`` is ``mqtt.topic_prefix`` (default ``ward``)."""

from __future__ import annotations


def bed(prefix: str, ward: str, bed_id: str) -> str:
    """``<prefix>/<ward>/bed/<bed>``: the root of one bed's topics."""
    return f"{prefix}/{ward}/bed/{bed_id}"


def vitals(prefix: str, ward: str, bed_id: str) -> str:
    """Monitor vital signs in (JSON, see README)."""
    return f"{bed(prefix, ward, bed_id)}/vitals"


def observations(prefix: str, ward: str, bed_id: str) -> str:
    """Nurses' manual observations in."""
    return f"{bed(prefix, ward, bed_id)}/observations"


def bag(prefix: str, ward: str, bed_id: str) -> str:
    """Bag announcements in."""
    return f"{bed(prefix, ward, bed_id)}/infusion/bag"


def alerts(prefix: str, ward: str, bed_id: str) -> str:
    """Every alert transition out (not retained)."""
    return f"{bed(prefix, ward, bed_id)}/alerts"


def alert_state(prefix: str, ward: str, bed_id: str, alert_id: str) -> str:
    """The retained current state of one open alert."""
    return f"{alerts(prefix, ward, bed_id)}/{alert_id}"


def alert_ack(prefix: str, ward: str, bed_id: str, alert_id: str) -> str:
    """Acknowledgement commands in: ``{"by": "..."}``."""
    return f"{alert_state(prefix, ward, bed_id, alert_id)}/ack"


def alert_ack_reply(prefix: str, ward: str, bed_id: str, alert_id: str) -> str:
    """Replies to acknowledgement commands (accepted or the error)."""
    return f"{alert_ack(prefix, ward, bed_id, alert_id)}/reply"


def escalations(prefix: str, ward: str) -> str:
    """Escalated high-priority alerts for the whole ward."""
    return f"{prefix}/{ward}/escalations"
