"""``wardd routes``: who would be told of a sample alert, and when, if nobody acknowledged
it. Pure: the alert engine and the router run on a simulated clock, nothing is sent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from daemon.alerts import AlertBook
from daemon.config import Config, Hl7ReceiverConfig, WebhookReceiverConfig
from daemon.delivery.routing import Held, Notice, Router
from daemon.events import AlertCandidate, Kind, Priority, Text

STEP_S = 1.0
QUIET_HORIZON_S = 86_400.0  # a held alert waits for its quiet period's end: up to a day


@dataclass(frozen=True, slots=True)
class Sample:
    """The alert to try."""

    condition: str
    priority: Priority
    kind: Kind
    ward: str
    bed: str
    at: datetime


def preview(config: Config, sample: Sample, *, horizon_s: float) -> list[str]:
    """The lines ``wardd routes`` prints: the route, then each notice with its time."""
    language = config.daemon.language
    book = AlertBook(escalate_after_s=config.alerts.escalate_after_s)
    router = Router(config.routing, config.routes)
    candidate = AlertCandidate(
        sample.condition,
        sample.ward,
        sample.bed,
        sample.at,
        present=True,
        kind=sample.kind,
        priority=sample.priority,
    )
    zone = router.zone
    fr = language == "fr"
    lines = [
        ("Alerte d'essai : " if fr else "Sample alert: ")
        + f"{sample.priority.upper()} {sample.condition} ({sample.kind}), {sample.ward}/{sample.bed}, "
        + f"{sample.at.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}"
    ]
    route = next((r for r in config.routes if r.name == router.match_route(candidate)), None)
    if route is None:
        lines.append(
            "Aucune route ne la prend : personne n'est prévenu (elle reste sur le poste et la page)."
            if fr
            else "No route takes it: nobody is told (it stays on the station and the page)."
        )
        return lines
    lines.append(
        (f"Route : {route.name} ; niveaux : " if fr else f"Route: {route.name}; levels: ")
        + " | ".join(f"{i}: {', '.join(level)}" for i, level in enumerate(route.levels))
    )
    for rule in config.routing.inhibit:
        if sample.condition in rule.targets:
            lines.append(
                f"Inhibée tant qu'une alerte {rule.source} au moins aussi prioritaire est ouverte au lit."
                if fr
                else f"Inhibited while a {rule.source} alert of at least its priority is open at the bed."
            )
    notices: list[tuple[float, Notice]] = []
    now = sample.at
    for transition in book.apply(candidate, now):
        notices += [(0.0, n) for n in router.transition(transition, now)]
    held = {t.held for t in router.tracks.values()}
    if Held.QUIET in held:
        lines.append(
            "Période calme : attend le résumé de la fin de la période."
            if fr
            else "Quiet period: held for the digest at the period's end."
        )
        horizon_s = max(horizon_s, QUIET_HORIZON_S)
    elapsed = 0.0
    while elapsed < horizon_s:
        elapsed += STEP_S
        now = sample.at + timedelta(seconds=elapsed)
        for transition in book.tick(now):
            notices += [(elapsed, n) for n in router.transition(transition, now)]
        notices += [(elapsed, n) for n in router.tick(now)]
        if Held.QUIET in held and not any(t.held is Held.QUIET for t in router.tracks.values()):
            break
    kinds = {r.name: r.type for r in config.receivers}
    urls = {r.name: r.url for r in config.receivers if isinstance(r, WebhookReceiverConfig)}
    urls.update(
        {
            r.name: f"mllp{'s' if r.tls else ''}://{r.host}:{r.port}"
            for r in config.receivers
            if isinstance(r, Hl7ReceiverConfig)
        }
    )
    for offset, notice in notices:
        when = (sample.at + timedelta(seconds=offset)).astimezone(zone)
        to = ", ".join(
            f"{name} ({kinds.get(name, '?')}{' ' + urls[name] if name in urls else ''})"
            for name in notice.receivers
        )
        lines.append(
            f"  {'+' + _duration(offset):>13} ({when:%H:%M:%S})  {notice.kind:<10} "
            f"{'niveau' if fr else 'level'} {notice.level} -> {to}"
        )
    if not notices:
        lines.append(
            f"Personne n'est prévenu dans les {_duration(horizon_s)}."
            if fr
            else f"Nobody is told within {_duration(horizon_s)}."
        )
    footer = Text(
        f"Without acknowledgement, within {_duration(horizon_s)}. A delivery that fails "
        "past its retries tells the next level at once; acknowledgement or resolution sends "
        "a closing notice to everyone told.",
        f"Sans acquittement, sur {_duration(horizon_s)}. Un envoi qui échoue après ses "
        "tentatives prévient aussitôt le niveau suivant ; l'acquittement ou la fin envoie un "
        "avis de clôture à tous ceux qui ont été prévenus.",
    )
    lines.append(footer.get(language))
    return lines


def _duration(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s" if secs else f"{minutes} min"
    return f"{secs} s"
