"""Certificates for private TLS setups (the tests, ``wardd demo --secure``), made by the
``openssl`` command (Debian's package): a CA, and server certificates it signs, for the
names and addresses asked for. Never for a ward: a hospital's CA signs its broker's."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Authority:
    """A private CA: its certificate and key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ServerCert:
    """A server certificate and its key, signed by an ``Authority``."""

    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl is not installed (Debian: apt-get install openssl)")
    # The program found on PATH, with arguments made here: nothing from outside.
    subprocess.run([openssl, *args], cwd=cwd, check=True, capture_output=True)  # noqa: S603


def authority(folder: Path, name: str = "ward-test-ca", *, days: int = 2) -> Authority:
    """A new self-signed CA in ``folder``, valid for ``days``."""
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", str(days), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return Authority(cert, key)


def server_cert(
    folder: Path,
    ca: Authority,
    *,
    names: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = ("127.0.0.1",),
    name: str = "server",
    days: int = 2,
    usage: str = "serverAuth",
) -> ServerCert:
    """A certificate for ``names`` and ``ips``, signed by ``ca``: a server's, or a client's
    with ``usage="clientAuth"`` (a gateway that proves itself to a listener)."""
    folder.mkdir(parents=True, exist_ok=True)
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    alt = ",".join([*(f"DNS:{n}" for n in names), *(f"IP:{ip}" for ip in ips)])
    extensions = folder / f"{name}.ext"
    extensions.write_text(f"subjectAltName={alt}\nextendedKeyUsage={usage}\n")
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={(names or ips)[0]}",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
        "-out", str(cert), "-days", str(days), "-extfile", str(extensions),
        cwd=folder,
    )  # fmt: skip
    return ServerCert(cert, key)
