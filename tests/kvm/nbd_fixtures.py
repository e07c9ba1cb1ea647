"""Fixtures for tests/kvm/test_nbd.py: real qemu-nbd servers over images built with qemu-img and
qemu-io, a silent TCP server, and TLS certificates. qemu-utils missing: skip, or fail when CI=true.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.unavailable import unavailable

QEMU_TOOLS = ("qemu-nbd", "qemu-img", "qemu-io")


def run(*args: str | Path) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise AssertionError(f"{' '.join(map(str, args))} failed: {proc.stderr or proc.stdout}")
    return proc.stdout


def make_image(path: Path, size: int, commands: Sequence[str] = (), fmt: str = "qcow2") -> Path:
    """Create an image and apply qemu-io commands such as ``write -P 0xab 1M 64k``."""
    run("qemu-img", "create", "-q", "-f", fmt, path, str(size))
    if commands:
        run("qemu-io", "-f", fmt, *(arg for cmd in commands for arg in ("-c", cmd)), path)
    return path


def raw_content(image: Path, fmt: str = "qcow2") -> bytes:
    """The guest-visible bytes, as QEMU itself converts them."""
    out = image.with_name(image.name + ".ref.raw")
    run("qemu-img", "convert", "-f", fmt, "-O", "raw", image, out)
    return out.read_bytes()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class NBDServer:
    export: str
    socket: Path | None = None
    port: int | None = None


@pytest.fixture(scope="session")
def qemu_nbd_tools() -> None:
    missing = [tool for tool in QEMU_TOOLS if shutil.which(tool) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed (apt-get install qemu-utils)")


@pytest.fixture
def nbd_server(qemu_nbd_tools: None, tmp_path: Path) -> Iterator[Callable[..., NBDServer]]:
    """``start(image, export, fmt=..., extra=[...], tcp=False)`` runs a read-only qemu-nbd on a
    unix socket (or 127.0.0.1:port) and returns once it accepts connections."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        image: Path,
        export: str,
        *,
        fmt: str = "qcow2",
        extra: Sequence[str] = (),
        tcp: bool = False,
    ) -> NBDServer:
        n = len(procs)
        server = NBDServer(export)
        args = ["qemu-nbd", f"--format={fmt}", "--read-only", "--persistent", "--shared=4"]
        args += [f"--export-name={export}", *extra]
        if tcp:
            server.port = free_port()
            args += ["--bind=127.0.0.1", f"--port={server.port}"]
        else:
            server.socket = tmp_path / f"nbd{n}.sock"
            args.append(f"--socket={server.socket}")
        log = tmp_path / f"qemu-nbd{n}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen([*args, str(image)], stdout=subprocess.DEVNULL, stderr=err)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while not _accepts(server):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"qemu-nbd did not start: {log.read_text()}", pytrace=False)
            time.sleep(0.01)
        return server

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _accepts(server: NBDServer) -> bool:
    if server.socket is not None and not server.socket.exists():
        return False
    family = socket.AF_UNIX if server.socket is not None else socket.AF_INET
    address = str(server.socket) if server.socket is not None else ("127.0.0.1", server.port)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(address)
        except OSError:
            return False
        return True


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port on 127.0.0.1 whose server accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.05)  # close() does not wake a blocked accept(): poll a stop flag
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=5)
    listener.close()
    for conn in held:
        conn.close()


@pytest.fixture(scope="session")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, laid out as QEMU's
    tls-creds-x509 expects (the proxy uses ca-cert.pem and client-*.pem)."""
    directory = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "backupconsole test CA")])
    ca_cert = (
        _cert_builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        _cert_builder(name, ca_name, key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    # The proxy's side, for servers that verify their peer (libvirt's backup_tls_x509_verify).
    client_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    client_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "backupconsole proxy")])
    client_cert = (
        _cert_builder(client_name, ca_name, client_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca-cert.pem").write_bytes(_pem(ca_cert))
    for role, (certificate, private_key) in {
        "server": (cert, key),
        "client": (client_cert, client_key),
    }.items():
        (directory / f"{role}-cert.pem").write_bytes(_pem(certificate))
        (directory / f"{role}-key.pem").write_bytes(
            private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    return directory


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _cert_builder(
    subject: x509.Name, issuer: x509.Name, public_key: rsa.RSAPublicKey, now: datetime.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
