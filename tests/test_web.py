"""The ward page's pure parts: password hashes, sessions, texts, its config, the shared bed view."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon import cli
from daemon.alerts import AlertBook
from daemon.app import build_rules
from daemon.clock import ManualClock
from daemon.config import parse
from daemon.errors import ConfigError
from daemon.events import AlertCandidate, Metric, Priority, VitalSample
from daemon.wardview import LatestVitals, by_urgency, ward_view
from daemon.web import i18n
from daemon.web.passwords import hash_password, parse_hash, verify_password
from daemon.web.server import bed_json
from daemon.web.sessions import Sessions
from daemon.web.throttle import MAX_KEYS, LoginThrottle

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
CHEAP = 10  # log2 of scrypt's cost for tests: the format and the check, not the strength
STATIC = Path(__file__).parent.parent / "daemon" / "web" / "static"


def test_a_hash_checks_its_password_only() -> None:
    stored = parse_hash(hash_password("correct horse", log2_n=CHEAP))
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("x" * 5000, stored), "an oversized password is refused before scrypt"


def test_a_hash_describes_itself_and_is_salted() -> None:
    first, second = hash_password("same", log2_n=CHEAP), hash_password("same", log2_n=CHEAP)
    assert first != second
    assert re.fullmatch(r"scrypt\$ln=10,r=8,p=1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+", first)
    assert str(parse_hash(first)) == first


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("plain-password", "must be a hash"),
        ("scrypt$ln=4,r=8,p=1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5", "outside"),
        ("scrypt$ln=30,r=8,p=1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5", "outside"),
        ("scrypt$ln=14,r=8,p=1$c2E=$a2V5a2V5a2V5a2V5a2V5a2V5", "too short"),
    ],
)
def test_a_bad_hash_is_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_hash(text)


def test_wardd_web_password_prints_a_hash_of_standard_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("long enough password\n"))
    monkeypatch.setattr("daemon.web.passwords.DEFAULT_LOG2_N", CHEAP)
    assert cli.main(["web-password"]) == 0
    printed = capsys.readouterr().out.strip()
    assert verify_password("long enough password", parse_hash(printed))


def test_wardd_web_password_refuses_a_short_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["web-password"]) == 1
    assert "8 characters at least" in capsys.readouterr().err


# --- sessions -----------------------------------------------------------------------------------


def test_a_session_ends_after_its_ttl_on_the_daemons_clock() -> None:
    clock = ManualClock(T0)
    sessions = Sessions(600, clock)
    token, session = sessions.create("a.martin")
    assert sessions.get(token) == session
    clock._elapsed_s = 599.0
    assert sessions.get(token) is not None
    clock._elapsed_s = 600.0
    assert sessions.get(token) is None
    assert len(sessions) == 0


def test_sessions_survive_a_restart_for_users_still_configured() -> None:
    clock = ManualClock(T0)
    sessions = Sessions(600, clock)
    kept, _ = sessions.create("a.martin")
    removed, _ = sessions.create("gone")
    saved = sessions.dump()
    assert kept not in str(saved), "only digests of the tokens are kept"
    again = Sessions(600, clock)
    assert again.load(saved, {"a.martin"}) == 1
    assert again.get(kept) is not None
    assert again.get(removed) is None


def test_logout_drops_the_session() -> None:
    sessions = Sessions(600, ManualClock(T0))
    token, _ = sessions.create("a")
    assert sessions.drop(token)
    assert sessions.get(token) is None
    assert not sessions.drop(token)
    assert not sessions.drop(None)


# --- texts --------------------------------------------------------------------------------------


def test_every_text_exists_in_both_languages() -> None:
    assert set(i18n.TEXTS["en"]) == set(i18n.TEXTS["fr"])
    assert all(value.strip() for texts in i18n.TEXTS.values() for value in texts.values())


def test_the_script_uses_only_texts_that_exist() -> None:
    script = (STATIC / "ward.js").read_text()
    used = set(re.findall(r"\bS\.(\w+)", script))
    prefixed = set(re.findall(r'S\["(\w+)_"', script))
    assert used <= set(i18n.TEXTS["en"]), used - set(i18n.TEXTS["en"])
    for prefix in prefixed:
        assert any(key.startswith(prefix + "_") for key in i18n.TEXTS["en"]), prefix


@pytest.mark.parametrize(
    ("header", "language"),
    [
        (None, "en"),
        ("fr-FR,fr;q=0.9,en;q=0.8", "fr"),
        ("en-GB,fr;q=0.5", "en"),
        ("de-DE,fr;q=0.3", "fr"),
        ("fr;q=0,en", "en"),
        ("fr;q=bad", "en"),
        ("en;q=0.5,fr;q=0.5", "en"),
    ],
)
def test_the_login_page_follows_accept_language(header: str | None, language: str) -> None:
    assert i18n.from_accept_language(header) == language


# --- config -------------------------------------------------------------------------------------


def _user(name: str = "a.martin", **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "role": "nurse",
        "display_name": "Anne Martin",
        "password_hash": hash_password("pw-for-tests", log2_n=CHEAP),
        **more,
    }


def test_web_config_defaults_and_a_user() -> None:
    config = parse({"web": {"enabled": True, "users": [_user(language="fr")]}})
    assert (config.web.host, config.web.port, config.web.session_ttl_s) == ("127.0.0.1", 8080, 28800.0)
    assert config.web.users[0].language == "fr"
    assert not parse({}).web.enabled


def test_web_config_errors_come_all_at_once() -> None:
    data = {
        "daemon": {"workers": 2},
        "web": {
            "enabled": True,
            "port": 70000,
            "users": [
                _user(role="doctor"),
                _user(password_hash="hunter2"),
                _user(display_name="\u0007"),
                _user("bad name"),
            ],
        },
    }
    with pytest.raises(ConfigError) as caught:
        parse(data)
    issues = {issue.location: issue.reason for issue in caught.value.issues}
    assert "web.port" in issues
    assert "web.users[0].role" in issues
    assert "wardd web-password" in issues["web.users[1].password_hash"]
    assert "web.users[2].display_name" in issues
    assert "web.users[3].name" in issues


def test_web_config_cross_checks() -> None:
    with pytest.raises(ConfigError) as caught:
        parse({"daemon": {"workers": 2}, "web": {"enabled": True, "users": [_user(), _user()]}})
    issues = {issue.location: issue.reason for issue in caught.value.issues}
    assert "already used" in issues["web.users[1].name"]
    assert "workers" in issues["web.enabled"]
    with pytest.raises(ConfigError) as caught:
        parse({"web": {"enabled": True}})
    assert [issue.location for issue in caught.value.issues] == ["web.users"]


def test_sound_config_defaults_are_the_iec_patterns_with_placeholder_timings() -> None:
    sound = parse({}).web.sound
    assert (sound.audio_paused_s, sound.low_sounds) == (120.0, False)
    # 10 pulses of 0.15 s, 8 gaps of 0.1 s within the groups, 0.35 s between the two groups of 5.
    assert sound.burst_s(10) == pytest.approx(10 * 0.15 + 8 * 0.1 + 0.35)
    assert sound.burst_s(3) == pytest.approx(3 * 0.15 + 2 * 0.1)
    assert sound.burst_s(1) == pytest.approx(0.15)


@pytest.mark.parametrize(
    ("sound", "location", "why"),
    [
        ({"tone_hz": 20}, "web.sound.tone_hz", "greater than or equal to 150"),
        ({"pulse_s": 0}, "web.sound.pulse_s", "greater than or equal"),
        ({"audio_paused_s": -1}, "web.sound.audio_paused_s", "greater than 0"),
        ({"high_repeat_s": 2.6}, "web.sound", "high_repeat_s (2.6 s) must be longer than its burst (2.65 s)"),
        ({"medium_repeat_s": 0.5}, "web.sound", "medium_repeat_s"),
        ({"low_repeat_s": 0.1}, "web.sound", "low_repeat_s"),
        ({"volume": 1}, "web.sound.volume", "unknown option"),
    ],
)
def test_a_bad_sound_setting_is_refused_with_the_reason(
    sound: dict[str, Any], location: str, why: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse({"web": {"sound": sound}})
    [issue] = caught.value.issues
    assert issue.location == location
    assert why in issue.reason


# --- the bed view -------------------------------------------------------------------------------


def _ward() -> Any:
    beds = [
        {
            "ward": "w1",
            "id": bed,
            "patient": f"p-{bed}",
            "weight_kg": 63,
            "height_cm": 165,
            "protocol_start": (T0 - timedelta(days=2)).isoformat(),
        }
        for bed in ("b1", "b2", "b3")
    ]
    return parse({"beds": beds})


def _candidate(bed: str, condition: str, priority: Priority) -> AlertCandidate:
    return AlertCandidate(condition=condition, ward="w1", bed=bed, time=T0, present=True, priority=priority)


def test_the_most_urgent_bed_comes_first_and_an_acknowledged_alert_counts_less() -> None:
    config = _ward()
    engine = build_rules(config)
    book = AlertBook()
    book.apply(_candidate("b2", "FEVER", Priority.MEDIUM), T0)
    [high] = book.apply(_candidate("b3", "HYPOTENSION", Priority.HIGH), T0)
    latest = LatestVitals()
    views = by_urgency(ward_view(config, engine, book, latest, T0))
    assert [view.bed.id for view in views] == ["b3", "b2", "b1"]
    book.acknowledge(high.alert.id, "nurse", T0)
    views = by_urgency(ward_view(config, engine, book, latest, T0))
    assert [view.bed.id for view in views] == ["b2", "b3", "b1"]


def test_a_bed_shows_dose_next_step_vitals_and_news2() -> None:
    config = _ward()
    engine = build_rules(config)
    sample = VitalSample(
        "w1", "b1", "mon", T0, {Metric.TEMP_C: 38.4, Metric.HR_PER_MIN: 96.0, Metric.RR_PER_MIN: 18.0}
    )
    engine.handle(sample, T0)
    latest = LatestVitals()
    latest.observe(sample)
    book = AlertBook()
    book.apply(_candidate("b1", "FEVER", Priority.MEDIUM), T0)
    [view] = [v for v in ward_view(config, engine, book, latest, T0) if v.bed.id == "b1"]
    data = bed_json(view, "fr")
    assert (data["day"], data["expected_ug_per_day"], data["delivered_ug_per_day"]) == (3, 9.0, None)
    assert data["next_step"] == {"at": "2026-03-07T08:00:00Z", "ug_per_day": 28.0}
    assert data["vitals"] == {"temp_c": 38.4, "hr_per_min": 96.0, "rr_per_min": 18.0}
    # Temperature 38.4 scores 1, pulse 96 scores 1; the other five parameters are missing.
    assert data["news2"] == {"score": 2, "partial": True}
    assert data["level"] == "medium"
    [alert] = data["alerts"]
    assert (alert["condition"], alert["state"], alert["message"]) == ("FEVER", "active", "FEVER au lit b1")


def test_after_a_restart_the_bed_shows_the_values_the_score_kept() -> None:
    config = _ward()
    engine = build_rules(config)
    engine.handle(VitalSample("w1", "b1", "mon", T0, {Metric.SPO2_PCT: 95.0}), T0)
    [view, *_] = ward_view(config, engine, AlertBook(), LatestVitals(), T0)
    assert view.vitals == {Metric.SPO2_PCT: 95.0}
    assert view.vitals_time == T0


def test_every_asset_is_a_package_file_with_no_address_outside() -> None:
    files = {path.name for path in STATIC.iterdir()}
    assert files == {"ward.css", "ward.js", "favicon.svg"}
    templates = Path(__file__).parent.parent / "daemon" / "web" / "templates"
    for path in [*STATIC.iterdir(), *templates.iterdir()]:
        text = path.read_text()
        external = [
            url
            for url in re.findall(r"(?:https?:)?//[\w.-]+\.\w+", text)
            if url != "http://www.w3.org"  # the SVG namespace
        ]
        assert not external, (path.name, external)
        assert "@import" not in text
        assert "@font-face" not in text


def test_the_login_throttle_forgets_the_oldest_names_first_and_stays_bounded() -> None:
    clock = ManualClock(datetime(2026, 3, 2, tzinfo=UTC))
    throttle = LoginThrottle(clock, failures=2, per_address=100_000, window_s=300, lockout_s=60)
    throttle.failed("a.martin", "10.0.0.1")
    assert throttle.wait_s("a.martin", "10.0.0.1") == 0  # one mistake is allowed
    throttle.failed("a.martin", "10.0.0.1")
    assert throttle.wait_s("a.martin", "10.0.0.2") == 60  # the login, from anywhere
    assert throttle.wait_s("p.viewer", "10.0.0.1") == 0  # the address is far from its limit
    spray = LoginThrottle(clock, failures=1, per_address=100_000, window_s=300, lockout_s=60)
    for i in range(MAX_KEYS + 500):  # made-up names, each locked at its first failure
        spray.failed(f"guess{i}", "10.0.0.9")
    assert len(spray) <= MAX_KEYS
    assert spray.wait_s("guess0", "10.0.0.8") == 0  # the oldest were forgotten
    assert spray.wait_s(f"guess{MAX_KEYS + 499}", "10.0.0.8") == 60  # the newest are still held
