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
    """The unauthenticated acknowledgement path: refused, with a reply that says why."""
    return f"{alert_state(prefix, ward, bed_id, alert_id)}/ack"


def alert_ack_reply(prefix: str, ward: str, bed_id: str, alert_id: str) -> str:
    """Replies to commands on ``alert_ack`` (always a refusal)."""
    return f"{alert_ack(prefix, ward, bed_id, alert_id)}/reply"


def alert_ack_by(prefix: str, ward: str, bed_id: str, alert_id: str, user: str) -> str:
    """Acknowledgements in, by the broker's authenticated ``user`` (``{"by": display name}``).

    The broker's ACL lets each user write only the topic with its own name
    (``pattern write .../ack/by/%u``), so the level after ``by`` proves the author.
    """
    return f"{alert_ack(prefix, ward, bed_id, alert_id)}/by/{user}"


def alert_ack_by_reply(prefix: str, ward: str, bed_id: str, alert_id: str, user: str) -> str:
    """Replies to ``user``'s acknowledgements (accepted or the error), readable by that user only."""
    return f"{alert_ack_by(prefix, ward, bed_id, alert_id, user)}/reply"


def ack_filters(prefix: str, ward: str, bed: str) -> list[str]:
    """What the daemon subscribes to for acknowledgements: the proven path and the refused one.

    Not ``.../ack/#``: that would bring the daemon's own replies back to it.
    """
    return [alert_ack_by(prefix, ward, bed, "+", "+"), alert_ack(prefix, ward, bed, "+")]


def cli_scratch(prefix: str, user: str) -> str:
    """A user's private topics (``pattern readwrite <prefix>/cli/%u/#``), for ``wardd ack``."""
    return f"{prefix}/cli/{user}"


def escalations(prefix: str, ward: str) -> str:
    """Escalated high-priority alerts for the whole ward."""
    return f"{prefix}/{ward}/escalations"


def daemon_status(prefix: str, client_id: str) -> str:
    """The retained status of one daemon instance (``online`` with a heartbeat time, or
    ``offline``: the last will). ``_wardd`` cannot be a ward: ward ids start with a letter
    or digit."""
    return f"{prefix}/_wardd/{client_id}/status"


def admissions_by(prefix: str, user: str) -> str:
    """Admin commands in (admit, transfer, discharge, update), by the broker's authenticated
    ``user`` (``pattern write <prefix>/_admin/admissions/by/%u``). ``_admin`` cannot be a ward."""
    return f"{prefix}/_admin/admissions/by/{user}"


def admissions_by_reply(prefix: str, user: str) -> str:
    """Replies to ``user``'s admin commands, readable by that user only."""
    return f"{admissions_by(prefix, user)}/reply"
