"""A small synchronous QMP client (stdlib only) for tests that drive QEMU directly, without
libvirt, and for diagnostics.

QMP is JSON objects, one per line, over a unix socket: the server greets, the client must send
``qmp_capabilities`` before anything else, and asynchronous events may arrive between a command
and its reply. Events are collected in :attr:`QMPClient.events` rather than dropped, because
tests often wait for one (``BLOCK_JOB_COMPLETED``, ``SHUTDOWN``, ...).

    with QMPClient(sock_path) as qmp:
        qmp.execute("blockdev-add", {"driver": "qcow2", "node-name": "n0", "file": "f0"})
        qmp.execute("nbd-server-start", addr={"type": "unix", "data": {"path": nbd_path}})

Argument names are passed through as they are: QMP mixes ``node-name`` with ``bps_rd``, so a
dict (positional) is there for names that are not Python identifiers; keywords are merged in.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any


class QMPError(Exception):
    """QEMU answered a command with an error."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"{command}: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


class QMPConnectionError(OSError):
    """The socket closed, timed out, or the peer did not speak QMP."""


class QMPClient:
    def __init__(self, path: Path | str, *, timeout: float = 30.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self.greeting: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._next_id = 0

    # --- connection ------------------------------------------------------------------------

    def connect(self, *, retry_for: float = 0.0) -> QMPClient:
        """Connect and negotiate capabilities. ``retry_for`` seconds of retries cover a QEMU that
        is still creating its socket (``server=on,wait=off`` makes it appear early, though)."""
        deadline = time.monotonic() + retry_for
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)
        self._sock = sock
        self._buffer = b""
        greeting = self._read_message()
        if "QMP" not in greeting:
            self.close()
            raise QMPConnectionError(f"{self.path}: not a QMP greeting: {greeting!r}")
        self.greeting = greeting["QMP"]
        self.execute("qmp_capabilities")
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> QMPClient:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- commands --------------------------------------------------------------------------

    def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> Any:
        """Run ``command`` and return its ``return`` value; raise :class:`QMPError` on an error
        reply. Events that arrive meanwhile are appended to :attr:`events`."""
        args = {**(arguments or {}), **kwargs}
        self._next_id += 1
        request_id = f"c{self._next_id}"
        message: dict[str, Any] = {"execute": command, "id": request_id}
        if args:
            message["arguments"] = args
        self._send(message)
        while True:
            reply = self._read_message()
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != request_id:
                continue  # a late reply to an earlier, timed-out command
            if "error" in reply:
                error = reply["error"]
                raise QMPError(command, error.get("class", "?"), error.get("desc", ""))
            return reply.get("return")

    def hmp(self, command_line: str) -> str:
        """Run a human-monitor command. HMP reports errors as text, not as a QMP error, so
        callers that expect silence (``qemu-io``) must check that the result is empty."""
        return str(self.execute("human-monitor-command", {"command-line": command_line}))

    def wait_event(self, name: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Return (and remove from :attr:`events`) the first event called ``name``, reading
        more from the socket until it arrives."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for index, event in enumerate(self.events):
                if event["event"] == name:
                    return self.events.pop(index)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no QMP event {name} within the timeout")
            message = self._read_message(timeout=remaining)
            if "event" in message:
                self.events.append(message)

    def clear_events(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        return events

    # --- wire ------------------------------------------------------------------------------

    def _send(self, message: Mapping[str, Any]) -> None:
        if self._sock is None:
            raise QMPConnectionError(f"{self.path}: not connected")
        self._sock.sendall(json.dumps(message).encode() + b"\n")

    def _read_message(self, *, timeout: float | None = None) -> dict[str, Any]:
        if self._sock is None:
            raise QMPConnectionError(f"{self.path}: not connected")
        self._sock.settimeout(self.timeout if timeout is None else timeout)
        while b"\n" not in self._buffer:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError as exc:
                raise TimeoutError(f"{self.path}: no reply from QEMU") from exc
            if not chunk:
                raise QMPConnectionError(f"{self.path}: QEMU closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise QMPConnectionError(f"{self.path}: unexpected QMP message {message!r}")
        return message
