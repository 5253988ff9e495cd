"""TLS for the daemon's links: one client context from the config, and failures in plain words.

Every command that connects (``wardd run``, ``ack``, ``scenario``, ``demo``) builds its
context here from the same ``[mqtt.tls]`` or ``[influx.tls]`` section, so none of them
connects differently from the daemon.
"""

from __future__ import annotations

import ssl

from daemon.config import ServerTlsConfig, TlsConfig
from daemon.errors import ConfigError, ConfigIssue

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# OpenSSL's X509_V_ERR_* codes that a ward will meet, in the words a technician needs.
_VERIFY_REASONS = {
    2: "the server's certificate is not signed by a trusted CA (is ca_file the hospital's CA?)",
    18: "the server's certificate is self-signed and not trusted (set ca_file)",
    19: "the server's certificate is not signed by a trusted CA (is ca_file the hospital's CA?)",
    20: "the server's certificate is not signed by a trusted CA (is ca_file the hospital's CA?)",
    21: "the server's certificate is not signed by a trusted CA (is ca_file the hospital's CA?)",
    9: "the server's certificate is not valid yet (check the clocks)",
    10: "the server's certificate has expired",
    62: "the server's certificate is for another name than the one in the url",
    64: "the server's certificate is for another name than the one in the url (an IP address)",
}


def client_context(tls: TlsConfig, section: str) -> ssl.SSLContext:
    """A client context for ``tls``; ``ConfigError`` (located at ``section``) if a file is unusable."""
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise _unusable(section, "ca_file", tls.ca_file, exc) from exc
    context.minimum_version = _VERSIONS[tls.min_version]
    # The certificate is verified either way; only the name check can be turned off
    # (a broker reached by an address its certificate does not list).
    context.check_hostname = tls.check_hostname
    if tls.cert_file is not None:
        try:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise _unusable(section, "cert_file", tls.cert_file, exc) from exc
    return context


def server_context(tls: ServerTlsConfig, section: str) -> ssl.SSLContext:
    """A server context for a listener; ``ConfigError`` (at ``section``) if a file is unusable.

    With ``client_ca_file``, a client without a certificate signed by that CA is refused
    during the handshake.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise _unusable(section, "cert_file", tls.cert_file, exc) from exc
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(tls.client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise _unusable(section, "client_ca_file", tls.client_ca_file, exc) from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _unusable(section: str, key: str, path: object, exc: Exception) -> ConfigError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return ConfigError(section, [ConfigIssue(f"{section}.tls.{key}", f"{path}: {reason}")])


def describe(exc: BaseException) -> str | None:
    """What a TLS failure means, if ``exc`` (or what caused it) is one; ``None`` otherwise."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "verify_code", None)
        if isinstance(code, int):
            reason = _VERIFY_REASONS.get(code, getattr(current, "verify_message", None) or str(current))
            return f"TLS: {reason}"
        # aiohttp wraps the ssl module's error and keeps it apart from the cause chain.
        inner = getattr(current, "certificate_error", None)
        if isinstance(inner, BaseException):
            current = inner
            continue
        if isinstance(current, ssl.SSLError):
            return f"TLS: {current.reason or current}"
        current = current.__cause__ or current.__context__
    return None
