"""Every text of the ward page, in English and French.

The page's user reads the language of their login (``[[web.users]] language``); the
login page follows the browser's ``Accept-Language``. The script receives its texts
from the page (``strings``), so that it holds no words of its own.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("en", "fr")
DEFAULT_LANGUAGE = "en"

TEXTS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "title": "Ward",
        "colon": ": ",
        "login_title": "wardd — log in",
        "login_heading": "Log in to the ward page",
        "user": "User",
        "password": "Password",
        "login": "Log in",
        "logout": "Log out",
        "login_failed": "Wrong user or password.",
        "login_expired": "Your session has ended: log in again.",
        "form_expired": "The form had expired: please try again.",
        "connecting": "Connecting…",
        "live": "Live",
        "lost": "Connection to the daemon lost: this view is NOT up to date. Reconnecting…",
        "last_update": "last update",
        "stale": "not up to date",
        "day": "day",
        "starts": "starts",
        "ended": "protocol ended",
        "delivered": "delivered",
        "expected": "expected",
        "per_day": "µg/day",
        "unknown": "unknown",
        "next_step": "next",
        "in": "in",
        "end_of_protocol": "end of protocol",
        "no_vitals": "no vital signs yet",
        "news2": "NEWS2",
        "partial": "partial",
        "no_alerts": "no open alert",
        "priority_high": "HIGH",
        "priority_medium": "MEDIUM",
        "priority_low": "LOW",
        "state_active": "active",
        "state_acknowledged": "acknowledged",
        "state_latched": "latched",
        "state_resolved": "resolved",
        "escalation": "escalation level",
        "since": "since",
        "acknowledge": "Acknowledge",
        "acked_by": "acknowledged by",
        "ack_refused": "Acknowledgement refused",
        "ack_failed": "Acknowledgement failed: the daemon did not answer",
        "role_viewer": "viewer (read only)",
        "role_nurse": "nurse",
        "role_admin": "administrator",
        "recent": "Recent alert transitions",
        "phase_start": "new",
        "phase_update": "updated",
        "phase_escalate": "worse",
        "phase_deescalate": "milder",
        "phase_overdue": "not acknowledged",
        "phase_ack": "acknowledged",
        "phase_latch": "latched",
        "phase_reactivate": "back",
        "phase_end": "ended",
        "temp_c": "T",
        "sbp_mmhg": "SBP",
        "dbp_mmhg": "DBP",
        "map_mmhg": "MAP",
        "hr_per_min": "HR",
        "spo2_pct": "SpO2",
        "rr_per_min": "RR",
        "unit_s": "s",
        "unit_min": "min",
        "unit_h": "h",
        "unit_d": "d",
        "no_beds": "No bed is configured.",
        "sound_enable": "Enable sound",
        "sound_off": "Sound off",
        "sound_on": "Sound on",
        "sound_unavailable": "No sound in this browser",
        "audio_pause": "Pause audio",
        "audio_resume": "Resume audio",
        "audio_paused": "Audio paused",
        "disclaimer": "wardd suggests and alerts; it never makes a diagnosis.",
    },
    "fr": {
        "title": "Service",
        "colon": " : ",
        "login_title": "wardd — connexion",
        "login_heading": "Connexion à la page du service",
        "user": "Utilisateur",
        "password": "Mot de passe",
        "login": "Se connecter",
        "logout": "Se déconnecter",
        "login_failed": "Utilisateur ou mot de passe incorrect.",
        "login_expired": "Votre session a pris fin : reconnectez-vous.",
        "form_expired": "Le formulaire avait expiré : veuillez réessayer.",
        "connecting": "Connexion…",
        "live": "En direct",
        "lost": "Connexion au démon perdue : cet affichage N'EST PLUS à jour. Reconnexion…",
        "last_update": "dernière mise à jour",
        "stale": "pas à jour",
        "day": "jour",
        "starts": "débute",
        "ended": "protocole terminé",
        "delivered": "délivré",
        "expected": "attendu",
        "per_day": "µg/jour",
        "unknown": "inconnu",
        "next_step": "prochain palier",
        "in": "dans",
        "end_of_protocol": "fin du protocole",
        "no_vitals": "pas encore de signes vitaux",
        "news2": "NEWS2",
        "partial": "partiel",
        "no_alerts": "aucune alerte en cours",
        "priority_high": "HAUTE",
        "priority_medium": "MOYENNE",
        "priority_low": "BASSE",
        "state_active": "active",
        "state_acknowledged": "acquittée",
        "state_latched": "verrouillée",
        "state_resolved": "résolue",
        "escalation": "niveau d'escalade",
        "since": "depuis",
        "acknowledge": "Acquitter",
        "acked_by": "acquittée par",
        "ack_refused": "Acquittement refusé",
        "ack_failed": "Échec de l'acquittement : le démon n'a pas répondu",
        "role_viewer": "lecture seule",
        "role_nurse": "infirmier·ère",
        "role_admin": "administrateur·rice",
        "recent": "Dernières transitions d'alertes",
        "phase_start": "nouvelle",
        "phase_update": "mise à jour",
        "phase_escalate": "aggravée",
        "phase_deescalate": "atténuée",
        "phase_overdue": "non acquittée",
        "phase_ack": "acquittée",
        "phase_latch": "verrouillée",
        "phase_reactivate": "de retour",
        "phase_end": "terminée",
        "temp_c": "T",
        "sbp_mmhg": "PAS",
        "dbp_mmhg": "PAD",
        "map_mmhg": "PAM",
        "hr_per_min": "FC",
        "spo2_pct": "SpO2",
        "rr_per_min": "FR",
        "unit_s": "s",
        "unit_min": "min",
        "unit_h": "h",
        "unit_d": "j",
        "no_beds": "Aucun lit n'est configuré.",
        "sound_enable": "Activer le son",
        "sound_off": "Son coupé",
        "sound_on": "Son actif",
        "sound_unavailable": "Pas de son dans ce navigateur",
        "audio_pause": "Pause audio",
        "audio_resume": "Reprendre l'audio",
        "audio_paused": "Audio en pause",
        "disclaimer": "wardd suggère et alerte ; il ne pose jamais de diagnostic.",
    },
}


def texts(language: str) -> Mapping[str, str]:
    """The page's texts in ``language`` (English for any other)."""
    return TEXTS.get(language, TEXTS[DEFAULT_LANGUAGE])


def from_accept_language(header: str | None) -> str:
    """The page language a browser prefers (RFC 9110 ``Accept-Language``): the listed
    language of ours with the highest weight, English when none is listed."""
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for position, item in enumerate((header or "").split(",")):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().lower().split("-")[0]
        if primary not in LANGUAGES:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        # Equal weights: the first listed wins (a tiny penalty per position).
        score = q - position * 1e-6
        if q > 0 and score > best_q:
            best, best_q = primary, score
    return best
