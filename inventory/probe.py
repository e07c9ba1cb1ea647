"""Reachability and identity checks of a hypervisor endpoint, bounded in time.

The probe connects, and for TLS endpoints completes the handshake and compares the certificate's
SHA-256 fingerprint with the pinned one (or with the system trust store when none is pinned). It
never sends credentials: logging in is the connector's job during sync.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from inventory.choices import TLS_KINDS, ConnectionKind


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message: str
    fingerprint: str = ""


def format_fingerprint(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def normalize_fingerprint(value: str) -> str:
    hexdigits = "".join(ch for ch in value if ch.isalnum()).upper()
    return ":".join(hexdigits[i : i + 2] for i in range(0, len(hexdigits), 2))


def _connect(address: str, port: int, deadline: float) -> socket.socket:
    if address.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        sock.connect(address)
        return sock
    return socket.create_connection((address, port), timeout=max(deadline - time.monotonic(), 0.01))


# libvirt's default ports per URI transport (ssh: the SSH daemon; tcp/tls: libvirtd itself).
_LIBVIRT_PORTS = {"ssh": 22, "tcp": 16509, "tls": 16514}


def _libvirt_target(uri: str) -> tuple[str, int, bool]:
    """(socket path or host, port, speaks SSH) of a libvirt URI such as ``qemu+ssh://h/system``."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2] or ("tls" if parts.hostname else "unix")
    if transport == "unix" or not parts.hostname:
        socket_path = parse_qs(parts.query).get("socket", ["/run/libvirt/libvirt-sock"])[0]
        return socket_path, 0, False
    return parts.hostname, parts.port or _LIBVIRT_PORTS.get(transport, 22), transport == "ssh"


def probe(
    kind: str,
    address: str,
    port: int,
    *,
    verify_tls: bool,
    pinned_fingerprint: str,
    timeout: float,
) -> ProbeResult:
    deadline = time.monotonic() + timeout
    ssh = True
    if ConnectionKind(kind) == ConnectionKind.KVM and address.startswith("qemu"):
        address, port, ssh = _libvirt_target(address)
    where = address if address.startswith("/") else f"{address}:{port}"
    try:
        sock = _connect(address, port, deadline)
    except TimeoutError:
        return ProbeResult(False, f"No answer from {where} within {timeout:g} s.")
    except OSError as exc:
        return ProbeResult(False, f"Cannot reach {where}: {exc.strerror or exc}.")
    with sock:
        if ConnectionKind(kind) not in TLS_KINDS:
            if not ssh:  # libvirt's own protocol sends nothing first
                return ProbeResult(True, f"libvirt at {where} accepts connections.")
            return _check_banner(sock, where, deadline)
        return _check_tls(sock, address, port, where, verify_tls, pinned_fingerprint, deadline)


def _check_banner(sock: socket.socket, where: str, deadline: float) -> ProbeResult:
    if sock.family == socket.AF_UNIX:
        return ProbeResult(True, f"libvirt socket {where} accepts connections.")
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        banner = sock.recv(256).split(b"\r\n", 1)[0].decode("ascii", "replace")
    except TimeoutError:
        return ProbeResult(False, f"{where} accepted the connection but sent no SSH banner.")
    except OSError as exc:
        return ProbeResult(False, f"{where} closed the connection: {exc.strerror or exc}.")
    if not banner.startswith("SSH-"):
        return ProbeResult(False, f"{where} does not speak SSH (qemu+ssh needs it).")
    return ProbeResult(True, f"{where} answers with {banner}.")


def _check_tls(
    sock: socket.socket,
    address: str,
    port: int,
    where: str,
    verify_tls: bool,
    pinned: str,
    deadline: float,
) -> ProbeResult:
    context = ssl.create_default_context()
    # The pin (or the trust store, below) decides trust, so the handshake itself accepts any
    # certificate; we need it to read the certificate we then judge.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        with context.wrap_socket(sock, server_hostname=address) as tls:
            der = tls.getpeercert(binary_form=True) or b""
    except TimeoutError:
        return ProbeResult(False, f"{where} did not complete a TLS handshake in time.")
    except (ssl.SSLError, OSError) as exc:
        return ProbeResult(False, f"TLS handshake with {where} failed: {exc}.")
    fingerprint = format_fingerprint(der)
    if not verify_tls:
        return ProbeResult(True, f"{where} reachable (certificate not verified).", fingerprint)
    if pinned:
        if normalize_fingerprint(pinned) == fingerprint:
            return ProbeResult(True, f"{where} presented the pinned certificate.", fingerprint)
        return ProbeResult(
            False,
            f"{where} presented a certificate with fingerprint {fingerprint}, not the pinned one. "
            "If the certificate was replaced on purpose, pin the new fingerprint.",
            fingerprint,
        )
    try:
        with (
            _connect(address, port, deadline) as again,
            ssl.create_default_context().wrap_socket(again, server_hostname=address),
        ):
            pass
    except ssl.SSLCertVerificationError as exc:
        return ProbeResult(
            False,
            f"{where} presented a certificate this system does not trust ({exc.verify_message}; "
            f"SHA-256 {fingerprint}). Check it and pin this fingerprint to trust it.",
            fingerprint,
        )
    except (ssl.SSLError, OSError) as exc:
        return ProbeResult(False, f"TLS handshake with {where} failed: {exc}.", fingerprint)
    return ProbeResult(
        True, f"{where} presented a certificate trusted by this system.", fingerprint
    )
