"""vSphere sessions: TLS checked against the connection's pinned SHA-256 fingerprint on every
connection (SOAP and file transfers alike), one logged-in session per connection and process,
renewed transparently when the server has forgotten it (expiry, restart: NotAuthenticated)."""

from __future__ import annotations

import hashlib
import http.client
import ssl
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from pyVmomi import SoapStubAdapter, VmomiSupport, vim, vmodl

from inventory.probe import format_fingerprint, normalize_fingerprint


class VSphereError(Exception):
    """vSphere said no; the message is for the run log."""


class VSphereUnreachable(VSphereError, ConnectionError):
    """vCenter/ESXi did not answer: transient, so runs retry with backoff."""


class CertificateMismatch(VSphereError):
    """The endpoint's certificate is not the pinned one: nothing is sent to it."""


class _PinnedContext(ssl.SSLContext):
    """Accepts exactly one certificate, by SHA-256 fingerprint, whoever signed it.

    pyvmomi's own ``thumbprint`` check only runs when ordinary verification failed first, and it
    then switches the shared context to CERT_NONE for good; checking in ``wrap_socket`` instead
    covers every connection, including the datastore HTTP transfers."""

    pinned = ""

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        tls = super().wrap_socket(*args, **kwargs)
        actual = format_fingerprint(tls.getpeercert(binary_form=True) or b"")
        if actual != self.pinned:
            tls.close()
            raise CertificateMismatch(
                f"the server presented a certificate with SHA-256 fingerprint {actual}, not the "
                "pinned one; nothing was sent. If the certificate was replaced on purpose, pin "
                "the new fingerprint."
            )
        return tls


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    username: str
    password: str
    fingerprint: str  # AA:BB:… or "" (then the system's trust store decides)
    verify_tls: bool = True

    @classmethod
    def of(cls, connection: Any) -> Endpoint:
        return cls(
            host=connection.address,
            port=connection.port or 443,
            username=connection.username,
            password=connection.get_secret() if connection.has_secret else "",
            fingerprint=normalize_fingerprint(connection.tls_fingerprint or ""),
            verify_tls=connection.verify_tls,
        )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext:
        if self.fingerprint:
            pinned = _PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
            pinned.check_hostname = False
            pinned.verify_mode = ssl.CERT_NONE  # the fingerprint decides, in wrap_socket
            pinned.pinned = self.fingerprint
            return pinned
        if self.verify_tls:
            return ssl.create_default_context()
        unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        return unverified

    def https(self, timeout: float = 60.0) -> http.client.HTTPSConnection:
        """A connection for datastore transfers, trusted exactly like the SOAP session."""
        return http.client.HTTPSConnection(
            self.host, self.port, context=self.tls_context(), timeout=timeout
        )


def _wire_version(name: str) -> tuple[int, ...]:
    release = VmomiSupport.GetVersionNamespace(name).split("/")[-1]
    try:
        return tuple(int(part) for part in release.split("."))
    except ValueError:
        return ()  # internal builds ("vim25/m5CA1…"), never chosen


def _best_version(api_version: str) -> str:
    """The newest vim25 version pyvmomi knows that the server speaks too."""
    server = tuple(int(p) for p in api_version.split(".") if p.isdigit())
    known = [(v, _wire_version(v)) for v in VmomiSupport.GetServiceVersions("vim25")]
    usable = [(wire, v) for v, wire in known if wire and wire <= server]
    return max(usable)[1] if usable else "vim.version.version9"


class _RenewingStub(SoapStubAdapter):
    """Logs in again once and repeats the call when the server says the session is gone
    (NotAuthenticated means the call was not executed, so repeating it is safe)."""

    renew: Any = None

    def InvokeMethod(self, mo: Any, info: Any, args: Any, outerStub: Any = None) -> Any:
        try:
            return super().InvokeMethod(mo, info, args, outerStub)
        except vim.fault.NotAuthenticated:
            if self.renew is None or info.name in ("Login", "Logout"):
                raise
            self.renew()
            return super().InvokeMethod(mo, info, args, outerStub)


class Session:
    """A logged-in vSphere session. ``content`` is the ServiceContent; ``cookie`` authenticates
    datastore HTTP transfers; ``logins`` counts logins (the first one plus renewals)."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 60.0) -> None:
        self.endpoint = endpoint
        self.logins = 0
        self._lock = threading.Lock()
        try:
            probe = SoapStubAdapter(
                host=endpoint.host,
                port=endpoint.port,
                sslContext=endpoint.tls_context(),
                httpConnectionTimeout=timeout,
            )
            about = vim.ServiceInstance("ServiceInstance", probe).RetrieveContent().about
            self.stub = _RenewingStub(
                host=endpoint.host,
                port=endpoint.port,
                sslContext=endpoint.tls_context(),
                version=_best_version(about.apiVersion),
                httpConnectionTimeout=timeout,
            )
            self.content: Any = vim.ServiceInstance("ServiceInstance", self.stub).RetrieveContent()
        except ssl.SSLCertVerificationError as exc:
            raise VSphereError(
                f"{endpoint.where} presented a certificate this system does not trust "
                f"({exc.verify_message}). Check its fingerprint and pin it on the connection."
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise VSphereUnreachable(f"cannot reach vSphere at {endpoint.where}: {exc}") from exc
        self.about = self.content.about
        self.is_vcenter = self.about.apiType == "VirtualCenter"
        self._login()
        self.stub.renew = self.renew

    def _login(self) -> None:
        try:
            self.content.sessionManager.Login(self.endpoint.username, self.endpoint.password, None)
        except vim.fault.InvalidLogin as exc:
            raise VSphereError(f"{self.endpoint.where} refused the user name or password") from exc
        self.logins += 1

    def renew(self) -> None:
        """Log in again on the same connection (the server forgot the session)."""
        with self._lock:
            self._login()

    @property
    def cookie(self) -> str:
        """``vmware_soap_session=…`` for the Cookie header of datastore transfers."""
        return str(self.stub.cookie).split(";")[0]

    def logout(self) -> None:
        self.stub.renew = None
        with suppress(vmodl.MethodFault, OSError, http.client.HTTPException):
            self.content.sessionManager.Logout()  # fails when already gone: nothing to release

    def wait(self, task: Any, *, timeout: float = 3600.0, what: str = "task") -> Any:
        """Wait for a task and return its result, reading only ``info.state/error/result``.

        pyVim's WaitForTask deserializes the whole TaskInfo; vcsim puts a Snapshot into
        ``info.entity`` for snapshot and file tasks, which pyvmomi 9 rejects (TypeError)."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            info = retrieve_one(self, task, ["info.state", "info.error", "info.result"])
            state = info.get("info.state")
            if state == "success":
                return info.get("info.result")
            if state == "error":
                error = info.get("info.error")
                message = getattr(error, "msg", "") or type(error).__name__
                raise VSphereError(f"{what} failed: {message}")
            if time.monotonic() > deadline:
                raise VSphereError(f"{what} did not finish within {timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)


def retrieve_one(session: Session, obj: Any, paths: list[str]) -> dict[str, Any]:
    """Some properties of one object in one round trip; unset ones are simply absent (reading
    them one by one would fetch each separately, and vcsim drops the connection on unset ones)."""
    collector = vmodl.query.PropertyCollector
    spec = collector.FilterSpec(
        objectSet=[collector.ObjectSpec(obj=obj, skip=False)],
        propSet=[collector.PropertySpec(type=type(obj), pathSet=paths)],
    )
    found = session.content.propertyCollector.RetrieveContents([spec])
    if not found:
        return {}
    return {prop.name: prop.val for prop in found[0].propSet}


_SESSIONS: dict[tuple[Any, ...], Session] = {}
_SESSIONS_LOCK = threading.Lock()


def _key(endpoint: Endpoint) -> tuple[Any, ...]:
    # The password is part of the identity (a changed password must log in again) but is only
    # kept hashed in the key.
    secret = hashlib.sha256(endpoint.password.encode()).hexdigest()
    return (
        endpoint.host,
        endpoint.port,
        endpoint.username,
        secret,
        endpoint.fingerprint,
        endpoint.verify_tls,
    )


def session_for(connection: Any) -> Session:
    """The process's session for this connection: logged in once, reused by every call."""
    endpoint = Endpoint.of(connection)
    key = _key(endpoint)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = Session(endpoint)
        return session


def forget_sessions() -> None:
    """Log out every cached session (tests, and a proxy shutting down)."""
    with _SESSIONS_LOCK:
        sessions = list(_SESSIONS.values())
        _SESSIONS.clear()
    for session in sessions:
        session.logout()
