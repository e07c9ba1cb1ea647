"""Where a pull-mode backup job serves its NBD exports, and how the proxy reaches them.

A proxy on the KVM host (libvirt reached through its unix socket) reads through a unix socket in
the job's scratch directory: transport ``local``. A proxy elsewhere (``qemu+ssh://host/system``,
``qemu+tls://``, ``qemu+tcp://``) reads over TCP, always with TLS and a client certificate:
transport ``nbdssl``. QEMU's side of TLS is the host's ``backup_tls_x509_cert_dir`` in qemu.conf.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

from django.conf import settings

from inventory.kvm.nbd import NBDClient

LOCAL = "local"
NBDSSL = "nbdssl"
# libvirt needs an explicit TCP port; a busy one is skipped, so concurrent jobs on a host work.
PORTS = range(10809, 10809 + 64)


class TransportUnavailable(Exception):
    """The proxy cannot read this host's exports (e.g. no TLS client certificate)."""


@dataclass(frozen=True)
class Endpoint:
    transport: str
    socket: str = ""
    host: str = ""
    port: int = 0
    tls: ssl.SSLContext | None = None

    def server_xml(self) -> str:
        if self.transport == LOCAL:
            return f"<server transport='unix' socket={quoteattr(self.socket)}/>"
        return f"<server transport='tcp' name={quoteattr(self.host)} port='{self.port}' tls='yes'/>"

    def connect(self, export: str, contexts: list[str]) -> NBDClient:
        if self.transport == LOCAL:
            return NBDClient.connect_unix(self.socket, export, meta_contexts=contexts)
        return NBDClient.connect_tcp(
            self.host, self.port, export, tls_context=self.tls, meta_contexts=contexts
        )

    def describe(self) -> str:
        if self.transport == LOCAL:
            return "local: NBD on a unix socket (proxy on the host)"
        return f"nbdssl: NBD over TLS to {self.host}:{self.port}"


def remote_host(uri: str) -> str | None:
    """The host a libvirt URI points at, or None when libvirt is on this machine."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2]
    if transport in ("", "unix") or not parts.hostname:
        return None
    return parts.hostname


def candidates(uri: str, workdir: Path) -> Iterator[Endpoint]:
    """Endpoints to offer libvirt, in order; the caller takes the first it accepts."""
    host = remote_host(uri)
    if host is None:
        yield Endpoint(LOCAL, socket=str(workdir / "nbd.sock"))
        return
    context = client_tls_context(Path(settings.KVM_NBD_TLS_DIR or ""))
    for port in PORTS:
        yield Endpoint(NBDSSL, host=host, port=port, tls=context)


def client_tls_context(directory: Path) -> ssl.SSLContext:
    """Verifies the host against our CA and presents the proxy's client certificate."""
    names = ("ca-cert.pem", "client-cert.pem", "client-key.pem")
    files = {name: directory / name for name in names}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise TransportUnavailable(
            f"reading a remote KVM host needs TLS client files in {directory} "
            f"(BACKUPCONSOLE_KVM_NBD_TLS_DIR); missing: {', '.join(missing)}"
        )
    context = ssl.create_default_context(cafile=str(files["ca-cert.pem"]))
    context.load_cert_chain(str(files["client-cert.pem"]), str(files["client-key.pem"]))
    return context


def port_in_use(message: str) -> bool:
    text = message.lower()
    return "address already in use" in text or "failed to bind" in text
