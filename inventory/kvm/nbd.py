"""Stdlib-only NBD client for pull-mode backups from QEMU (qemu-nbd, ``block-export-add``).

Speaks fixed-newstyle NBD with optional STARTTLS, structured replies and meta contexts
(``base:allocation``, ``qemu:dirty-bitmap:NAME``). Read-only: it never writes to an export.

Thread safety: an ``NBDClient`` is NOT thread safe. Use one client (one connection) per thread;
``read_many`` gives request pipelining on a single connection without threads.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from inventory.kvm import nbd_protocol as P
from inventory.kvm.nbd_protocol import BlockSizes, NBDError, NBDTimeoutError

__all__ = ["BlockSizes", "NBDClient", "NBDError", "NBDTimeoutError"]


@dataclass(eq=False)
class _Range:
    """One caller range of read_many; split into one or more requests."""

    offset: int
    buf: bytearray | memoryview
    remaining: int  # requests not yet answered completely
    error: NBDError | None = None
    zeroed: bool = True  # a fresh bytearray; a caller's buffer (readinto) must get holes zeroed


@dataclass(eq=False)
class _Request:
    cmd: int
    offset: int
    length: int
    view: memoryview | None = None  # READ: slice of the range buffer the data lands in
    target: _Range | None = None
    context_id: int = 0  # BLOCK_STATUS: the context whose extents we keep
    extents: list[tuple[int, int]] = field(default_factory=list)
    error: NBDError | None = None
    done: bool = False


class NBDClient:
    """One NBD connection to one export. Create with ``connect_unix`` or ``connect_tcp``."""

    def __init__(self, sock: socket.socket, export_name: str, timeout: float) -> None:
        self._sock: socket.socket = sock
        self.export_name = export_name
        self.timeout = timeout
        self._state = "handshake"  # -> "transmission" -> "closed"; "broken" after a stream error
        self.size = 0
        self.transmission_flags = 0
        self.block_sizes = BlockSizes(P.DEFAULT_MIN_BLOCK, P.DEFAULT_PREFERRED_BLOCK, P.MAX_REQUEST)
        self.structured_replies = False
        self.meta_contexts: dict[str, int] = {}  # context name -> id the server assigned
        self._inflight: dict[int, _Request] = {}
        self._next_cookie = 1
        # Size of the pieces large reads are split into. On a local unix socket 1-2 MiB pieces
        # measured ~2x faster than 4 MiB and ~3x faster than 32 MiB (client-side memory effects).
        self.request_size = P.DEFAULT_REQUEST_SIZE

    # -- connecting ------------------------------------------------------------------------

    @classmethod
    def connect_unix(
        cls,
        path: str | os.PathLike[str],
        export_name: str,
        *,
        meta_contexts: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> Self:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except OSError as exc:
            sock.close()
            raise P.connect_error(f"unix:{os.fspath(path)}", exc) from exc
        return cls._negotiate(sock, export_name, meta_contexts, timeout, None, None)

    @classmethod
    def connect_tcp(
        cls,
        host: str,
        port: int,
        export_name: str,
        *,
        tls_context: ssl.SSLContext | None = None,
        meta_contexts: Sequence[str] = (),
        timeout: float = 30.0,
    ) -> Self:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise P.connect_error(f"{host}:{port}", exc) from exc
        # Requests are tiny; Nagle would hold them back while replies are pending.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls._negotiate(sock, export_name, meta_contexts, timeout, tls_context, host)

    @classmethod
    def _negotiate(
        cls,
        sock: socket.socket,
        export_name: str,
        meta_contexts: Sequence[str],
        timeout: float,
        tls_context: ssl.SSLContext | None,
        hostname: str | None,
    ) -> Self:
        client = cls(sock, export_name, timeout)
        try:
            client._handshake(list(meta_contexts), tls_context, hostname)
        except struct.error as exc:
            client.close()
            raise NBDError(f"malformed handshake reply from NBD server: {exc}") from exc
        except BaseException:
            client.close()
            raise
        return client

    def _handshake(
        self, contexts: list[str], tls_context: ssl.SSLContext | None, hostname: str | None
    ) -> None:
        magic, opt_magic, flags = struct.unpack(">QQH", self._recv(18))
        if magic != P.NBDMAGIC:
            raise NBDError("peer is not an NBD server (bad greeting magic)")
        if opt_magic != P.IHAVEOPT or not flags & P.NBD_FLAG_FIXED_NEWSTYLE:
            raise NBDError("NBD server does not speak fixed-newstyle negotiation")
        no_zeroes = P.NBD_FLAG_C_NO_ZEROES if flags & P.NBD_FLAG_NO_ZEROES else 0
        self._send(P.U32.pack(P.NBD_FLAG_C_FIXED_NEWSTYLE | no_zeroes))
        if tls_context is not None:
            self._option_ack(P.NBD_OPT_STARTTLS)
            try:  # the TLS session starts right after the server's ACK
                self._sock = tls_context.wrap_socket(self._sock, server_hostname=hostname)
            except TimeoutError as exc:
                raise NBDTimeoutError(f"TLS handshake timed out after {self.timeout} s") from exc
            except (ssl.SSLError, OSError) as exc:
                raise NBDError(f"TLS handshake with NBD server failed: {exc}") from exc
        try:
            self._option_ack(P.NBD_OPT_STRUCTURED_REPLY)
            self.structured_replies = True
        except NBDError as exc:
            if exc.error != "NBD_REP_ERR_UNSUP":
                raise  # old servers may lack it: plain reads still work
        if contexts:
            self._set_meta_contexts(contexts)
        name = self.export_name.encode()
        infos = (P.NBD_INFO_EXPORT, P.NBD_INFO_BLOCK_SIZE)
        go = P.U32.pack(len(name)) + name + struct.pack(f">H{len(infos)}H", len(infos), *infos)
        have_export = False
        for reply, data in self._option(P.NBD_OPT_GO, go):
            info = P.U16.unpack_from(data)[0] if reply == P.NBD_REP_INFO else None
            if info == P.NBD_INFO_EXPORT:
                self.size, self.transmission_flags = P.INFO_EXPORT.unpack_from(data, 2)
                have_export = True
            elif info == P.NBD_INFO_BLOCK_SIZE:
                self.block_sizes = BlockSizes(*P.INFO_BLOCK_SIZE.unpack_from(data, 2))
        if not have_export:
            raise NBDError("NBD server ended NBD_OPT_GO without NBD_INFO_EXPORT")
        self._state = "transmission"

    def _set_meta_contexts(self, contexts: list[str]) -> None:
        if not self.structured_replies:
            raise NBDError("NBD server lacks structured replies, so meta contexts are unavailable")
        for reply, data in self._option(
            P.NBD_OPT_SET_META_CONTEXT, P.meta_query(self.export_name, contexts)
        ):
            if reply == P.NBD_REP_META_CONTEXT:
                self.meta_contexts[data[4:].decode()] = P.U32.unpack_from(data)[0]
        missing = [c for c in contexts if c not in self.meta_contexts]
        if missing:
            # Servers silently drop unknown contexts; list what exists to make the error useful.
            offered = [
                data[4:].decode()
                for reply, data in self._option(
                    P.NBD_OPT_LIST_META_CONTEXT, P.meta_query(self.export_name, [])
                )
                if reply == P.NBD_REP_META_CONTEXT
            ]
            raise NBDError(
                f"export {self.export_name!r} does not offer meta context "
                f"{', '.join(map(repr, missing))} (offered: {', '.join(offered) or 'none'})"
            )

    def _option(self, option: int, data: bytes) -> Iterator[tuple[int, bytes]]:
        """Send one option; yield its non-ACK replies; raise NBDError on an error reply."""
        self._send(P.OPTION_HEADER.pack(P.IHAVEOPT, option, len(data)) + data)
        while True:
            magic, opt, reply, length = P.OPTION_REPLY.unpack(self._recv(P.OPTION_REPLY.size))
            if magic != P.OPTION_REPLY_MAGIC or opt != option or length > 1 << 20:
                raise self._protocol_error(f"bad option reply to {P.OPTION_NAMES.get(option)}")
            payload = self._recv(length)
            if reply & P.NBD_REP_FLAG_ERROR:
                raise P.option_error(self.export_name, option, reply, payload)
            if reply == P.NBD_REP_ACK:
                return
            yield reply, payload

    def _option_ack(self, option: int) -> None:
        for reply, _ in self._option(option, b""):
            raise self._protocol_error(f"unexpected reply {reply} to {P.OPTION_NAMES[option]}")

    # -- transmission ----------------------------------------------------------------------

    @property
    def read_only(self) -> bool:
        return bool(self.transmission_flags & P.NBD_FLAG_READ_ONLY)

    @property
    def can_multi_conn(self) -> bool:
        return bool(self.transmission_flags & P.NBD_FLAG_CAN_MULTI_CONN)

    @property
    def max_request(self) -> int:
        """Size of read pieces: ``request_size`` capped by the server maximum and 32 MiB, in whole
        minimum blocks."""
        cap = min(self.block_sizes.maximum or P.MAX_REQUEST, P.MAX_REQUEST, self.request_size)
        return max(cap - cap % self.block_sizes.minimum, self.block_sizes.minimum)

    def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes; large reads are split and pipelined. Holes read as zeros."""
        return b"".join(data for _, data in self.read_many([(offset, length)]))

    def readinto(self, offset: int, buffer: memoryview, *, depth: int = 8) -> None:
        """Fill ``buffer`` with the bytes at ``offset``, pipelined like ``read`` but without
        copies: the replies land in the caller's buffer. Holes read as zeros."""
        self._check_open()
        length = len(buffer)
        self._check_range(offset, length)
        step = self.max_request
        rng = _Range(offset, buffer, -(-length // step), zeroed=False)
        for start in range(0, length, step):
            n = min(step, length - start)
            while len(self._inflight) >= depth:
                self._receive_one()
            view = buffer[start : start + n]
            self._submit(_Request(P.NBD_CMD_READ, offset + start, n, view, rng))
        while rng.remaining:
            self._receive_one()
        if rng.error is not None:
            raise rng.error

    def read_many(
        self, ranges: Iterable[tuple[int, int]], *, depth: int = 8
    ) -> Generator[tuple[int, bytes], None, None]:
        """Yield ``(offset, data)`` for each ``(offset, length)`` in request order, keeping up to
        ``depth`` requests in flight. Replies may arrive out of order; they are routed by cookie.
        Ranges are consumed lazily, so ``ranges`` may be a generator. Stopping early (or an error)
        is safe: replies still in flight are consumed and dropped by the next call on the client,
        so nothing blocks in a generator finalizer."""
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._check_open()
        pending: deque[_Range] = deque()
        requests = self._split_reads(ranges, pending)
        exhausted = False
        while True:
            while not exhausted and len(self._inflight) < depth:
                req = next(requests, None)
                if req is None:
                    exhausted = True
                else:
                    self._submit(req)
            if pending and pending[0].remaining == 0:
                rng = pending.popleft()
                if rng.error is not None:
                    raise rng.error
                yield rng.offset, bytes(rng.buf)
            elif exhausted and not pending:
                return
            else:
                self._receive_one()

    def _split_reads(
        self, ranges: Iterable[tuple[int, int]], pending: deque[_Range]
    ) -> Iterator[_Request]:
        step = self.max_request
        for offset, length in ranges:
            self._check_range(offset, length)
            # bytearray() is zeroed, so hole chunks need no work.
            rng = _Range(offset, bytearray(length), -(-length // step))
            pending.append(rng)
            view = memoryview(rng.buf)
            for start in range(0, length, step):
                n = min(step, length - start)
                yield _Request(P.NBD_CMD_READ, offset + start, n, view[start : start + n], rng)

    def block_status(
        self, context: str, offset: int = 0, length: int | None = None
    ) -> list[tuple[int, int, int]]:
        """``(offset, length, flags)`` extents of ``context`` covering the range (default: to the
        end of the export), adjacent extents with equal flags merged."""
        self._check_open()
        context_id = self.meta_contexts.get(context)
        if context_id is None:
            raise NBDError(
                f"meta context {context!r} was not negotiated; pass it in meta_contexts= "
                f"(negotiated: {', '.join(self.meta_contexts) or 'none'})"
            )
        end = self.size if length is None else offset + length
        self._check_range(offset, end - offset)
        minimum = self.block_sizes.minimum
        step = 0xFFFFFFFF - 0xFFFFFFFF % minimum  # the request length field is 32 bits
        out: list[tuple[int, int, int]] = []
        pos = offset
        while pos < end:
            req = _Request(P.NBD_CMD_BLOCK_STATUS, pos, min(step, end - pos), context_id=context_id)
            self._submit(req)
            while not req.done:
                self._receive_one()
            if req.error is not None:
                raise req.error
            start = pos
            for ext_len, flags in req.extents:
                # Servers may describe less than asked (we continue) or more (we clip).
                ext_len = min(ext_len, end - pos)
                if ext_len <= 0:
                    break
                if out and out[-1][2] == flags:
                    out[-1] = (out[-1][0], out[-1][1] + ext_len, flags)
                else:
                    out.append((pos, ext_len, flags))
                pos += ext_len
            if pos == start:
                raise NBDError(f"NBD server returned no {context} extents at offset {pos}")
        return out

    def allocated_extents(
        self, offset: int = 0, length: int | None = None
    ) -> list[tuple[int, int]]:
        """``(offset, length)`` ranges that may hold data per ``base:allocation``: everything
        except extents flagged NBD_STATE_ZERO, which read as zeros and need not be copied."""
        extents = self.block_status("base:allocation", offset, length)
        return P.merge_ranges(extents, lambda flags: not flags & P.NBD_STATE_ZERO)

    def dirty_extents(
        self, bitmap_context: str, offset: int = 0, length: int | None = None
    ) -> list[tuple[int, int]]:
        """``(offset, length)`` ranges flagged dirty in e.g. ``qemu:dirty-bitmap:b0``."""
        extents = self.block_status(bitmap_context, offset, length)
        return P.merge_ranges(extents, lambda flags: bool(flags & P.NBD_STATE_DIRTY))

    def _check_open(self) -> None:
        if self._state != "transmission":
            raise NBDError(f"NBD connection to export {self.export_name!r} is {self._state}")

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"range {offset}+{length} is outside the {self.size}-byte export")
        minimum = self.block_sizes.minimum
        if offset % minimum or (length % minimum and offset + length != self.size):
            raise ValueError(f"range {offset}+{length} is not aligned to {minimum}-byte blocks")

    def _submit(self, req: _Request) -> None:
        cookie, self._next_cookie = self._next_cookie, self._next_cookie + 1
        self._inflight[cookie] = req
        self._send(P.REQUEST.pack(P.NBD_REQUEST_MAGIC, 0, req.cmd, cookie, req.offset, req.length))

    def _receive_one(self) -> None:
        """Read one reply (simple) or one chunk (structured) and apply it to its request."""
        (magic,) = P.U32.unpack(self._recv(4))
        if magic == P.NBD_SIMPLE_REPLY_MAGIC:
            err, cookie = P.SIMPLE_REPLY_TAIL.unpack(self._recv(P.SIMPLE_REPLY_TAIL.size))
            req = self._request(cookie)
            if err:
                req.error = P.command_error(req.cmd, req.offset, req.length, err, "")
            elif req.view is not None:
                self._recv_into(req.view)
            else:
                raise self._protocol_error("simple reply to a block status request")
            self._finish(cookie, req)
        elif magic == P.NBD_STRUCTURED_REPLY_MAGIC:
            flags, kind, cookie, length = P.STRUCTURED_TAIL.unpack(
                self._recv(P.STRUCTURED_TAIL.size)
            )
            req = self._request(cookie)
            self._chunk(req, kind, length)
            if flags & P.NBD_REPLY_FLAG_DONE:
                self._finish(cookie, req)
        else:
            raise self._protocol_error(f"bad reply magic {magic:#x}")

    def _chunk(self, req: _Request, kind: int, length: int) -> None:
        if kind in (P.NBD_REPLY_TYPE_OFFSET_DATA, P.NBD_REPLY_TYPE_OFFSET_HOLE):
            if req.view is None or length < 8:
                raise self._protocol_error(f"read chunk {kind} for a non-read request")
            (offset,) = P.U64.unpack(self._recv(8))
            if kind == P.NBD_REPLY_TYPE_OFFSET_DATA:
                size = length - 8
            elif length == 12:
                (size,) = P.U32.unpack(self._recv(4))
            else:
                raise self._protocol_error("malformed NBD_REPLY_TYPE_OFFSET_HOLE")
            start = offset - req.offset
            if start < 0 or start + size > req.length:
                raise self._protocol_error(f"chunk {offset}+{size} outside the request")
            if kind == P.NBD_REPLY_TYPE_OFFSET_DATA:
                self._recv_into(req.view[start : start + size])
            elif req.target is not None and not req.target.zeroed:  # a hole in a reused buffer
                req.view[start : start + size] = bytes(size)
        elif kind == P.NBD_REPLY_TYPE_BLOCK_STATUS:
            data = self._recv(length)
            if req.cmd != P.NBD_CMD_BLOCK_STATUS or length < 4 or (length - 4) % 8:
                raise self._protocol_error("malformed NBD_REPLY_TYPE_BLOCK_STATUS")
            if P.U32.unpack_from(data)[0] == req.context_id:
                req.extents.extend(P.EXTENT.iter_unpack(memoryview(data)[4:]))
        elif kind & P.NBD_REPLY_TYPE_ERROR_BIT:
            data = self._recv(length)
            if length < P.CHUNK_ERROR.size:
                raise self._protocol_error("malformed error chunk")
            err, msg_len = P.CHUNK_ERROR.unpack_from(data)
            msg = data[6 : 6 + msg_len].decode(errors="replace")
            if kind == P.NBD_REPLY_TYPE_ERROR_OFFSET and length >= 6 + msg_len + 8:
                msg += f" (at offset {P.U64.unpack_from(data, 6 + msg_len)[0]})"
            req.error = req.error or P.command_error(req.cmd, req.offset, req.length, err, msg)
        elif kind != P.NBD_REPLY_TYPE_NONE or length:
            raise self._protocol_error(f"unknown structured reply type {kind}")

    def _request(self, cookie: int) -> _Request:
        req = self._inflight.get(cookie)
        if req is None:
            raise self._protocol_error(f"reply for unknown cookie {cookie}")
        return req

    def _finish(self, cookie: int, req: _Request) -> None:
        del self._inflight[cookie]
        req.done = True
        if req.target is not None:
            req.target.remaining -= 1
            req.target.error = req.target.error or req.error

    # -- socket plumbing -------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise self._io_error(exc) from exc

    def _recv(self, n: int) -> bytes:
        buf = bytearray(n)
        self._recv_into(memoryview(buf))
        return bytes(buf)

    def _recv_into(self, view: memoryview) -> None:
        try:
            while view:
                got = self._sock.recv_into(view)
                if not got:  # QEMU does this e.g. on an I/O error in the middle of a read
                    self._state = "broken"
                    raise NBDError("NBD server closed the connection (see the server's log)")
                view = view[got:]
        except OSError as exc:
            raise self._io_error(exc) from exc

    def _io_error(self, exc: OSError) -> NBDError:
        self._state = "broken"  # the byte stream is out of sync; nothing more can be sent
        if isinstance(exc, TimeoutError):
            return NBDTimeoutError(f"NBD server did not answer within {self.timeout} s")
        return NBDError(f"NBD connection failed: {exc}")

    def _protocol_error(self, message: str) -> NBDError:
        self._state = "broken"
        return NBDError(f"NBD protocol error: {message}")

    def close(self) -> None:
        """Say goodbye (NBD_OPT_ABORT or NBD_CMD_DISC, best effort) and close the socket."""
        if self._state == "closed":
            return
        with suppress(OSError):  # the server may already be gone
            if self._state == "handshake":
                self._sock.sendall(P.OPTION_HEADER.pack(P.IHAVEOPT, P.NBD_OPT_ABORT, 0))
            elif self._state == "transmission":
                self._sock.sendall(P.REQUEST.pack(P.NBD_REQUEST_MAGIC, 0, P.NBD_CMD_DISC, 0, 0, 0))
        self._state = "closed"
        self._inflight.clear()
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
