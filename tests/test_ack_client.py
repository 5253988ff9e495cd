"""The pure part of ``wardd ack``'s client (``send_ack``): what it refuses before any
broker is asked, what it subscribes to, which retained message says where an alert is,
what it publishes, and how it reads the daemon's reply. The MQTT exchange itself runs in
``tests/test_alerts_mqtt.py`` and ``tests/test_secure_broker.py`` against real brokers.
"""

from __future__ import annotations

import json

import pytest

from daemon import topics
from daemon.alerts import (
    AckReply,
    ack_command,
    ack_lookup_topics,
    ack_refusal,
    ack_timeout_reply,
    alert_place,
    read_ack_reply,
    unknown_alert_reply,
)

AID = "b1-FEVER-7"


# --- refusals before any broker -------------------------------------------------------


def test_a_well_formed_acknowledgement_is_not_refused() -> None:
    assert ack_refusal(AID, "nurse-1", None) is None
    assert ack_refusal(AID, "nurse-1", "  Anne Martin  ") is None


@pytest.mark.parametrize(
    "user",
    ["", "-nurse", "nurse 1", "nurse/1", "n" * 65, "nurse+1", "nurse#", "infirmière"],
)
def test_a_user_that_cannot_be_a_topic_level_is_refused(user: str) -> None:
    reply = ack_refusal(AID, user, None)
    assert reply is not None
    assert (reply.ok, reply.alert_id, reply.reason) == (False, AID, "bad_user")
    assert reply.error.startswith("user '")
    assert reply.error.endswith(
        ": a user name is 1-64 letters, digits, '_', '.', ':', '@' or '-', starting with a letter or digit"
    )
    assert (reply.state, reply.ward, reply.bed) == (None, None, None)


def test_the_refused_user_is_quoted_as_data() -> None:
    reply = ack_refusal(AID, "nurse 1", "Anne")
    assert reply == AckReply(
        False,
        AID,
        "user 'nurse 1': a user name is 1-64 letters, digits, '_', '.', ':', '@' or '-', "
        "starting with a letter or digit",
        "bad_user",
    )


@pytest.mark.parametrize("user", ["n" * 64, "a", "nurse.1:ward@site_x-2"])
def test_every_user_a_topic_level_allows_is_accepted(user: str) -> None:
    assert ack_refusal(AID, user, None) is None


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "the name must not be empty"),
        ("   ", "the name must not be empty"),
        ("x" * 65, "the name has 65 characters (limit 64)"),
        ("Anne\nMartin", "the name must be printable text (no control or line-break characters)"),
    ],
)
def test_a_name_that_is_no_name_is_refused(name: str, error: str) -> None:
    assert ack_refusal(AID, "nurse-1", name) == AckReply(False, AID, error, "bad_by")


def test_a_name_of_64_characters_is_accepted() -> None:
    assert ack_refusal(AID, "nurse-1", "x" * 64) is None


def test_the_user_is_checked_before_the_name_and_the_name_before_the_id() -> None:
    first = ack_refusal("no/id", "bad user", "")
    second = ack_refusal("no/id", "nurse-1", "")
    assert (first and first.reason, second and second.reason) == ("bad_user", "bad_by")


@pytest.mark.parametrize("alert_id", ["", "b1/FEVER-7", "b1-FEVER-+", "#", "-b1", "b1 FEVER", "x" * 202])
def test_an_id_that_cannot_be_a_topic_level_is_refused(alert_id: str) -> None:
    assert ack_refusal(alert_id, "nurse-1", None) == AckReply(
        False, alert_id, f"{alert_id!r} is not an alert id", "bad_id"
    )


def test_an_id_of_201_characters_is_accepted() -> None:
    assert ack_refusal("x" * 201, "nurse-1", None) is None


# --- what it subscribes to and publishes -----------------------------------------------


def test_it_listens_for_the_reply_then_the_state_then_its_own_barrier() -> None:
    assert ack_lookup_topics("ward", AID, "nurse-1", "abc123") == (
        "ward/+/bed/+/alerts/b1-FEVER-7/ack/by/nurse-1/reply",
        "ward/+/bed/+/alerts/b1-FEVER-7",
        "ward/cli/nurse-1/abc123",
    )


def test_the_barrier_is_under_the_users_own_topics() -> None:
    *_, barrier = ack_lookup_topics("site", AID, "dr.b", "t0")
    assert barrier.startswith(topics.cli_scratch("site", "dr.b") + "/")


def test_the_command_goes_to_the_users_own_topic_with_the_trimmed_name() -> None:
    topic, body = ack_command("ward", "w1", "b1", AID, "nurse-1", name="  Anne Martin ")
    assert topic == "ward/w1/bed/b1/alerts/b1-FEVER-7/ack/by/nurse-1"
    assert topic == topics.alert_ack_by("ward", "w1", "b1", AID, "nurse-1")
    assert json.loads(body) == {"by": "Anne Martin"}


def test_a_command_without_a_name_is_an_empty_object() -> None:
    assert ack_command("ward", "w1", "b1", AID, "nurse-1", name=None)[1] == b"{}"


def test_a_name_beyond_ascii_is_sent_as_utf8() -> None:
    _, body = ack_command("ward", "w1", "b1", AID, "nurse-1", name="Hélène Ødegård")
    assert body == '{"by": "Hélène Ødegård"}'.encode()


# --- where the alert is -----------------------------------------------------------------


def test_the_retained_state_says_the_ward_and_bed() -> None:
    assert alert_place("ward/w2/bed/b12/alerts/b1-FEVER-7", b'{"state": "active"}', AID) == ("w2", "b12")


@pytest.mark.parametrize("payload", [b"", "", None, bytearray()])
def test_an_empty_state_is_a_closed_alert_not_a_place(payload: object) -> None:
    assert alert_place("ward/w2/bed/b12/alerts/b1-FEVER-7", payload, AID) is None


@pytest.mark.parametrize(
    "topic",
    [
        "ward/w2/bed/b12/alerts/b1-FEVER-8",  # another alert
        "ward/w2/bed/b12/alerts/b1-FEVER-7/ack/by/nurse-1/reply",  # the reply filter's
        "ward/w2/bed/b12/alerts",
        "ward/w2/bed/b12/alerts/b1-FEVER-7/x",
        "x/ward/w2/bed/b12/alerts/b1-FEVER-7",
        "ward/w2/bay/b12/alerts/b1-FEVER-7",
        "ward/w2/bed/b12/alarms/b1-FEVER-7",
        "ward/cli/nurse-1/b1-FEVER-7",
    ],
)
def test_any_other_message_is_not_a_place(topic: str) -> None:
    assert alert_place(topic, b"{}", AID) is None


# --- the daemon's reply ----------------------------------------------------------------


def test_an_accepted_acknowledgement_reads_as_ok_with_its_state() -> None:
    payload = b'{"ok": true, "id": "b1-FEVER-7", "state": "acknowledged", "by": "nurse-1", "name": null}'
    assert read_ack_reply(AID, "w1", "b1", payload) == AckReply(True, AID, "", "", "acknowledged", "w1", "b1")


def test_a_refusal_reads_with_its_reason_and_error() -> None:
    payload = b'{"ok": false, "id": "b1-FEVER-7", "reason": "not_allowed", "error": "nurse-1 may not"}'
    assert read_ack_reply(AID, "w1", "b1", payload) == AckReply(
        False, AID, "nurse-1 may not", "not_allowed", None, "w1", "b1"
    )


@pytest.mark.parametrize("ok", ["1", "1.0", '"true"', '"yes"', "null", "{}"])
def test_only_true_is_success(ok: str) -> None:
    assert read_ack_reply(AID, "w1", "b1", f'{{"ok": {ok}, "state": "acknowledged"}}'.encode()).ok is False


def test_a_reply_without_ok_is_no_success() -> None:
    assert read_ack_reply(AID, "w1", "b1", b'{"state": "acknowledged"}') == AckReply(
        False, AID, "", "", "acknowledged", "w1", "b1"
    )


def test_reply_fields_that_are_not_strings_are_shown_as_text() -> None:
    reply = read_ack_reply(AID, "w1", "b1", b'{"ok": false, "reason": 3, "error": ["x"], "state": 0}')
    assert (reply.reason, reply.error, reply.state) == ("3", "['x']", "0")


def test_a_null_state_is_no_state() -> None:
    assert read_ack_reply(AID, "w1", "b1", b'{"ok": true, "state": null}').state is None


@pytest.mark.parametrize(
    "payload",
    [
        b"{oops",
        b"",
        b"[1, 2]",
        b'"ok"',
        b"true",
        b"\xff\xfe{}",
        b'{"ok": "\xff"}',
        b"[" * 100_000,
        "not json",
        42,
        None,
    ],
)
def test_a_reply_that_is_not_a_json_object_is_unreadable(payload: object) -> None:
    """Not JSON, not an object, not UTF-8, nested too deep: ``wardd ack`` says so and does not raise."""
    assert read_ack_reply(AID, "w1", "b1", payload) == AckReply(
        False, AID, "unreadable reply from the daemon", "bad_reply", ward="w1", bed="b1"
    )


@pytest.mark.parametrize(
    "payload", ['{"ok": true, "state": "resolved"}', bytearray(b'{"ok": true, "state": "resolved"}')]
)
def test_a_reply_given_as_text_or_bytearray_reads_the_same(payload: object) -> None:
    assert read_ack_reply(AID, "w1", "b1", payload) == AckReply(True, AID, "", "", "resolved", "w1", "b1")


def test_a_reply_in_utf8_keeps_its_accents() -> None:
    payload = json.dumps({"ok": False, "error": "refusée"}, ensure_ascii=False).encode()
    assert read_ack_reply(AID, "w1", "b1", payload).error == "refusée"


# --- no answer -----------------------------------------------------------------------------


def test_an_alert_not_open_anywhere_is_unknown() -> None:
    assert unknown_alert_reply(AID) == AckReply(
        False, AID, "no open alert with id 'b1-FEVER-7'", "unknown_id"
    )


def test_silence_says_how_long_and_who() -> None:
    assert ack_timeout_reply(AID, "nurse-1", 5.0) == AckReply(
        False,
        AID,
        "no answer from the daemon within 5 s (is the daemon running, and may user 'nurse-1' "
        "publish acknowledgements on this broker?)",
        "timeout",
    )
    assert "within 0.25 s" in ack_timeout_reply(AID, "nurse-1", 0.25).error
