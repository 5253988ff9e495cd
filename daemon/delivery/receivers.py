"""Receivers: how one notification reaches one destination (a webhook, Apprise).

Each ``send`` is one attempt and says what came of it; retrying, ordering and
journaling are the delivery queue's business (``daemon.delivery.service``). An HL7 v2
ORU^R40 sender to an alert manager (IHE PCD ACM) is a third ``Receiver``: a config
model with ``type = "hl7"`` in ``daemon.config.ReceiverConfig`` and a case in
``make_receiver``; its accept acknowledgements map to the same outcomes (AA delivered,
AE retry, AR refused).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import warnings
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import aiohttp

from daemon.config import AppriseReceiverConfig, ReceiverConfig, WebhookReceiverConfig
from daemon.errors import ConfigError, ConfigIssue

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Wardd-Signature"
"""``sha256=<hex>``: HMAC-SHA256 of the request's body with the receiver's key."""
DELIVERY_HEADER = "X-Wardd-Delivery"
"""The delivery's number: the same on every retry, so a receiver can drop a repeat."""


class Outcome(StrEnum):
    """What one attempt came to."""

    DELIVERED = "delivered"  # the receiver took it (2xx, Apprise's success)
    RETRY = "retry"  # not taken, worth trying again (no answer, 5xx, 408, 429, timeout)
    REFUSED = "refused"  # the receiver refuses it for good (4xx): the same again would fail too


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt's outcome and what the receiver said."""

    outcome: Outcome
    detail: str = ""


class Receiver(Protocol):
    """One destination. ``send`` never raises for a failed delivery (it returns
    ``RETRY`` or ``REFUSED``); cancellation propagates. ``close`` is awaited once, after
    the last ``send``."""

    name: str

    async def send(self, delivery_id: int, body: bytes, title: str, text: str) -> Attempt:
        """One attempt: ``body`` is the notification's JSON; ``title`` and ``text`` its words."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def signature(key: bytes, body: bytes) -> str:
    """The value of ``X-Wardd-Signature`` for ``body``."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class WebhookReceiver:
    """An HTTP POST of the notification's JSON, signed; a 2xx answer is a delivery."""

    def __init__(self, config: WebhookReceiverConfig, key: bytes) -> None:
        self.name = config.name
        self._config = config
        self._key = key
        self._session: aiohttp.ClientSession | None = None

    async def send(self, delivery_id: int, body: bytes, title: str, text: str) -> Attempt:
        """POST ``body`` (``title`` and ``text`` are inside it)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._config.timeout_s))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            SIGNATURE_HEADER: signature(self._key, body),
            DELIVERY_HEADER: str(delivery_id),
        }
        try:
            # A redirect is not a delivery: the URL is wrong, and a POST must not become a GET.
            async with self._session.post(
                self._config.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                answer = (await response.content.read(200)).decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Attempt(Outcome.RETRY, f"{type(exc).__name__}: {exc}"[:300])
        detail = f"HTTP {status}" + (f": {answer.strip()}" if answer.strip() else "")
        if 200 <= status < 300:
            return Attempt(Outcome.DELIVERED, detail)
        if status in (408, 429) or status >= 500:
            return Attempt(Outcome.RETRY, detail)
        return Attempt(Outcome.REFUSED, detail)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class AppriseReceiver:
    """One Apprise URL: ntfy, Pushover, e-mail, SMS gateways, chat. Apprise answers only
    yes or no, so every failure is worth a retry."""

    def __init__(self, config: AppriseReceiverConfig, url: str) -> None:
        # Imported here: only a config with an Apprise receiver pays for the library. Its
        # e-mail plugin imports the standard library's imghdr on first use, deprecated
        # since Python 3.11 (gone in 3.13, where Apprise has a shim): imported once here,
        # quietly, so that no deprecation warning comes out of a delivery.
        with warnings.catch_warnings(), contextlib.suppress(ImportError):
            warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
            import imghdr  # noqa: F401, PLC0415
        import apprise  # noqa: PLC0415

        self.name = config.name
        self._config = config
        self._apprise: Any = apprise.Apprise()
        if not self._apprise.add(url):
            # Apprise says no more; the URL itself is a secret and is not repeated.
            raise ConfigError(
                "<config>", [ConfigIssue(f"receivers.{config.name}.url", "Apprise does not accept this URL")]
            )

        for plugin in self._apprise:
            # Apprise runs a plugin in a thread, which a timeout of ours could not stop: a
            # late success would then repeat, or overtake, the next attempt. Its own socket
            # timeouts bound the attempt instead.
            plugin.socket_connect_timeout = config.timeout_s
            plugin.socket_read_timeout = config.timeout_s
            if config.min_gap_s is not None:
                plugin.request_rate_per_sec = config.min_gap_s

    async def send(self, delivery_id: int, body: bytes, title: str, text: str) -> Attempt:
        """Notify with ``title`` and ``text``."""
        result = await self._apprise.async_notify(title=title, body=text)
        if result:
            return Attempt(Outcome.DELIVERED, "accepted")
        return Attempt(Outcome.RETRY, "Apprise reported a failure (see its log lines)")

    async def close(self) -> None:
        """Nothing to close: Apprise opens a connection per notification."""


def make_receiver(config: ReceiverConfig) -> Receiver:
    """The receiver a config entry describes (its secret resolved)."""
    if isinstance(config, WebhookReceiverConfig):
        return WebhookReceiver(config, (config.secret.resolve() or "").encode("utf-8"))
    return AppriseReceiver(config, config.url.resolve() or "")


def secrets_of(configs: list[ReceiverConfig]) -> tuple[str, ...]:
    """The HMAC keys and Apprise URLs, for the log filter that keeps secrets out."""
    out: list[str] = []
    for config in configs:
        secret = config.secret if isinstance(config, WebhookReceiverConfig) else config.url
        value = secret.resolve()
        if value:
            out.append(value)
    return tuple(out)
