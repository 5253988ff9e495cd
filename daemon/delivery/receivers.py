"""Receivers: how one notification reaches one destination (a webhook, Apprise, an
alert manager over HL7 v2 and MLLP).

Each ``send`` is one attempt and says what came of it; retrying, ordering and
journaling are the delivery queue's business (``daemon.delivery.service``). A new kind
of receiver is a config model in ``daemon.config.ReceiverConfig`` and a case in
``make_receiver``; its answers map onto the three outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import hl7.mllp

from daemon.config import AppriseReceiverConfig, Hl7ReceiverConfig, ReceiverConfig, WebhookReceiverConfig
from daemon.delivery import acm
from daemon.errors import ConfigError, ConfigIssue
from daemon.links.tls import client_context, describe
from daemon.metrics import sanitize

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Wardd-Signature"
"""``sha256=<hex>``: HMAC-SHA256 of the request's body with the receiver's key."""
DELIVERY_HEADER = "X-Wardd-Delivery"
"""The delivery's number: the same on every retry, so a receiver can drop a repeat."""


class Outcome(StrEnum):
    """What one attempt came to."""

    DELIVERED = "delivered"  # the receiver took it (2xx, Apprise's success, HL7 AA)
    RETRY = "retry"  # not taken, worth trying again (no answer, 5xx, 408, 429, timeout, HL7 AE)
    REFUSED = "refused"  # refused for good (4xx, HL7 AR): the same again would fail too


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
        # Imported with the first webhook, not with the module: every daemon imports
        # this module, and aiohttp is 12 MiB and a fifth of its start-up imports.
        import aiohttp  # noqa: PLC0415

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


MAX_ACK_BYTES = 65_536  # an acknowledgement is a few hundred bytes; more is not one


class Hl7Receiver:
    """An alert manager (IHE PCD ACM) over MLLP: each alert of a notice as one ORU^R40,
    sent once the previous one is acknowledged, on one connection kept open between
    deliveries and opened again when it drops.

    The accept acknowledgement decides: AA (or CA) delivered, AE (CE) retried, AR (CR)
    refused; no answer within ``timeout_s``, a dropped connection, or an answer naming
    another message is retried, on a new connection (a late answer must not be taken for
    the next message's). The messages of a notice already accepted are not sent again
    when a later one of it is retried."""

    def __init__(self, config: Hl7ReceiverConfig, patients: Mapping[tuple[str, str], str]) -> None:
        self.name = config.name
        self._config = config
        self._patients = patients
        self._header = acm.Header(
            config.sending_facility, config.receiving_application, config.receiving_facility
        )
        # Built now: an unusable certificate file stops the start, with its place.
        self._tls = None if config.tls is None else client_context(config.tls, f"receivers.{config.name}")
        self._connection: tuple[hl7.mllp.HL7StreamReader, hl7.mllp.HL7StreamWriter] | None = None
        self._accepted: dict[int, set[str]] = {}  # delivery -> control ids acknowledged AA

    async def send(self, delivery_id: int, body: bytes, title: str, text: str) -> Attempt:
        """Each alert's message in turn, each waiting for its acknowledgement."""
        notice = json.loads(body)
        reports = acm.reports(
            notice, patients=self._patients, header=self._header, event_codes=self._config.event_codes
        )
        done = self._accepted.setdefault(delivery_id, set())
        answers: list[str] = []
        for report in reports:
            if report.control_id in done:
                continue
            attempt = await self._one(report)
            if attempt.outcome is Outcome.REFUSED:
                self._accepted.pop(delivery_id, None)  # the queue drops the delivery
            if attempt.outcome is not Outcome.DELIVERED:
                return attempt
            done.add(report.control_id)
            answers.append(attempt.detail)
        self._accepted.pop(delivery_id, None)
        if not reports:
            return Attempt(Outcome.DELIVERED, "nothing to report (every alert of the digest was closed)")
        return Attempt(Outcome.DELIVERED, "; ".join(answers)[:300] or "AA")

    async def _one(self, report: acm.Report) -> Attempt:
        try:
            async with asyncio.timeout(self._config.timeout_s):
                raw = await self._exchange(report)
        except (
            TimeoutError,
            OSError,
            asyncio.IncompleteReadError,
            hl7.mllp.InvalidBlockError,
            ValueError,
        ) as exc:
            self._drop()
            what = "no acknowledgement within the timeout" if isinstance(exc, TimeoutError) else None
            if isinstance(exc, asyncio.IncompleteReadError):
                what = "the alert manager closed the connection without an acknowledgement"
            detail = what or describe(exc) or f"{type(exc).__name__}: {exc}"
            return Attempt(Outcome.RETRY, f"{report.control_id}: {detail}"[:300])
        try:
            answer = acm.read_ack(raw.decode("utf-8", "replace"))
        except ValueError as exc:
            self._drop()
            return Attempt(Outcome.RETRY, sanitize(f"{report.control_id}: {exc}")[:300])
        if answer.control_id != report.control_id:
            self._drop()
            return Attempt(
                Outcome.RETRY,
                sanitize(f"{report.control_id}: the acknowledgement names {answer.control_id!r}")[:300],
            )
        # The manager's words go to the journal and the log: control characters escaped.
        detail = sanitize(f"{answer.code} {report.control_id}" + (f": {answer.text}" if answer.text else ""))
        if answer.code in ("AA", "CA"):
            return Attempt(Outcome.DELIVERED, detail)
        if answer.code in ("AR", "CR"):
            return Attempt(Outcome.REFUSED, detail[:300])
        return Attempt(Outcome.RETRY, detail[:300])

    async def _exchange(self, report: acm.Report) -> bytes:
        """Send ``report`` and read one answer. On a connection kept from an earlier
        message that turns out closed by the manager meanwhile (many close after each
        answer; the close may arrive just after our write), once more on a new one: the
        same control id, which a manager that did take it drops as a repeat."""
        reused = self._connection is not None
        reader, writer = await self._connect()
        try:
            writer.writeblock(report.encode())
            await writer.drain()
            return bytes(await reader.readblock())
        except (asyncio.IncompleteReadError, ConnectionError):
            if not reused:
                raise
        self._drop()
        reader, writer = await self._connect()
        writer.writeblock(report.encode())
        await writer.drain()
        return bytes(await reader.readblock())

    async def _connect(self) -> tuple[hl7.mllp.HL7StreamReader, hl7.mllp.HL7StreamWriter]:
        if self._connection is not None:
            reader, writer = self._connection
            if not reader.at_eof() and not writer.is_closing():
                return self._connection
            self._drop()  # the alert manager closed it since: a new one
        reader, writer = await hl7.mllp.open_hl7_connection(
            self._config.host, self._config.port, limit=MAX_ACK_BYTES, ssl=self._tls
        )
        self._connection = (reader, writer)
        log.info(
            "receiver %s: connected to the alert manager at %s:%d%s",
            self.name,
            self._config.host,
            self._config.port,
            " over TLS" if self._tls is not None else "",
        )
        return self._connection

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection[1].close()
            self._connection = None

    async def close(self) -> None:
        """Close the connection."""
        if self._connection is not None:
            writer = self._connection[1]
            self._connection = None
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()


def make_receiver(config: ReceiverConfig, patients: Mapping[tuple[str, str], str] | None = None) -> Receiver:
    """The receiver a config entry describes (its secret resolved); ``patients``: the
    pseudonym of each (ward, bed), for the receivers that name the patient (HL7)."""
    if isinstance(config, WebhookReceiverConfig):
        return WebhookReceiver(config, (config.secret.resolve() or "").encode("utf-8"))
    if isinstance(config, Hl7ReceiverConfig):
        return Hl7Receiver(config, patients or {})
    return AppriseReceiver(config, config.url.resolve() or "")


def secrets_of(configs: list[ReceiverConfig]) -> tuple[str, ...]:
    """The HMAC keys and Apprise URLs, for the log filter that keeps secrets out."""
    out: list[str] = []
    for config in configs:
        if isinstance(config, Hl7ReceiverConfig):
            continue  # no secret: an address, and TLS files by path
        secret = config.secret if isinstance(config, WebhookReceiverConfig) else config.url
        value = secret.resolve()
        if value:
            out.append(value)
    return tuple(out)
