"""NBD wire constants, struct layouts (big-endian), error types and pure helpers, named as in:
https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, NamedTuple

# Handshake.
NBDMAGIC: Final = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT: Final = 0x49484156454F5054  # "IHAVEOPT"
OPTION_REPLY_MAGIC: Final = 0x0003E889045565A9

NBD_FLAG_FIXED_NEWSTYLE: Final = 1 << 0
NBD_FLAG_NO_ZEROES: Final = 1 << 1
NBD_FLAG_C_FIXED_NEWSTYLE: Final = 1 << 0
NBD_FLAG_C_NO_ZEROES: Final = 1 << 1

NBD_OPT_ABORT: Final = 2
NBD_OPT_STARTTLS: Final = 5
NBD_OPT_GO: Final = 7
NBD_OPT_STRUCTURED_REPLY: Final = 8
NBD_OPT_LIST_META_CONTEXT: Final = 9
NBD_OPT_SET_META_CONTEXT: Final = 10

NBD_REP_ACK: Final = 1
NBD_REP_INFO: Final = 3
NBD_REP_META_CONTEXT: Final = 4
NBD_REP_FLAG_ERROR: Final = 1 << 31

REP_ERRORS: Final[dict[int, str]] = {
    NBD_REP_FLAG_ERROR + 1: "NBD_REP_ERR_UNSUP",
    NBD_REP_FLAG_ERROR + 2: "NBD_REP_ERR_POLICY",
    NBD_REP_FLAG_ERROR + 3: "NBD_REP_ERR_INVALID",
    NBD_REP_FLAG_ERROR + 4: "NBD_REP_ERR_PLATFORM",
    NBD_REP_FLAG_ERROR + 5: "NBD_REP_ERR_TLS_REQD",
    NBD_REP_FLAG_ERROR + 6: "NBD_REP_ERR_UNKNOWN",
    NBD_REP_FLAG_ERROR + 7: "NBD_REP_ERR_SHUTDOWN",
    NBD_REP_FLAG_ERROR + 8: "NBD_REP_ERR_BLOCK_SIZE_REQD",
    NBD_REP_FLAG_ERROR + 9: "NBD_REP_ERR_TOO_BIG",
    NBD_REP_FLAG_ERROR + 10: "NBD_REP_ERR_EXT_HEADER_REQD",
}

NBD_INFO_EXPORT: Final = 0
NBD_INFO_BLOCK_SIZE: Final = 3

# Transmission flags (subset we report).
NBD_FLAG_HAS_FLAGS: Final = 1 << 0
NBD_FLAG_READ_ONLY: Final = 1 << 1
NBD_FLAG_CAN_MULTI_CONN: Final = 1 << 8

# Transmission.
NBD_REQUEST_MAGIC: Final = 0x25609513
NBD_SIMPLE_REPLY_MAGIC: Final = 0x67446698
NBD_STRUCTURED_REPLY_MAGIC: Final = 0x668E33EF

NBD_CMD_READ: Final = 0
NBD_CMD_DISC: Final = 2
NBD_CMD_BLOCK_STATUS: Final = 7

NBD_REPLY_FLAG_DONE: Final = 1 << 0
NBD_REPLY_TYPE_NONE: Final = 0
NBD_REPLY_TYPE_OFFSET_DATA: Final = 1
NBD_REPLY_TYPE_OFFSET_HOLE: Final = 2
NBD_REPLY_TYPE_BLOCK_STATUS: Final = 5
NBD_REPLY_TYPE_ERROR: Final = (1 << 15) + 1
NBD_REPLY_TYPE_ERROR_OFFSET: Final = (1 << 15) + 2
NBD_REPLY_TYPE_ERROR_BIT: Final = 1 << 15

ERRNO_NAMES: Final[dict[int, str]] = {
    1: "EPERM",
    5: "EIO",
    12: "ENOMEM",
    22: "EINVAL",
    28: "ENOSPC",
    75: "EOVERFLOW",
    95: "ENOTSUP",
    108: "ESHUTDOWN",
}

# base:allocation flags; qemu:dirty-bitmap:* uses bit 0 for "dirty".
NBD_STATE_HOLE: Final = 1 << 0
NBD_STATE_ZERO: Final = 1 << 1
NBD_STATE_DIRTY: Final = 1 << 0

# Defaults when the server sends no NBD_INFO_BLOCK_SIZE (spec: 1 / 4 KiB / 32 MiB).
DEFAULT_MIN_BLOCK: Final = 1
DEFAULT_PREFERRED_BLOCK: Final = 4096
MAX_REQUEST: Final = 32 << 20  # QEMU refuses larger reads; also our memory cap per request.
DEFAULT_REQUEST_SIZE: Final = 2 << 20

OPTION_HEADER = struct.Struct(">QII")  # IHAVEOPT, option, length
OPTION_REPLY = struct.Struct(">QIII")  # magic, option, reply type, length
REQUEST = struct.Struct(">IHHQQI")  # magic, flags, type, cookie, offset, length
SIMPLE_REPLY_TAIL = struct.Struct(">IQ")  # error, cookie (after the 4-byte magic)
STRUCTURED_TAIL = struct.Struct(">HHQI")  # flags, type, cookie, length (after the magic)
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
INFO_EXPORT = struct.Struct(">QH")  # size, transmission flags
INFO_BLOCK_SIZE = struct.Struct(">III")  # minimum, preferred, maximum
EXTENT = struct.Struct(">II")  # length, flags
CHUNK_ERROR = struct.Struct(">IH")  # errno, message length


def rep_error_name(reply_type: int) -> str:
    return REP_ERRORS.get(reply_type, f"NBD_REP_ERR_{reply_type & ~NBD_REP_FLAG_ERROR}")


def errno_name(value: int) -> str:
    return ERRNO_NAMES.get(value, f"errno {value}")


OPTION_NAMES: Final[dict[int, str]] = {
    NBD_OPT_STARTTLS: "NBD_OPT_STARTTLS",
    NBD_OPT_GO: "NBD_OPT_GO",
    NBD_OPT_STRUCTURED_REPLY: "NBD_OPT_STRUCTURED_REPLY",
    NBD_OPT_LIST_META_CONTEXT: "NBD_OPT_LIST_META_CONTEXT",
    NBD_OPT_SET_META_CONTEXT: "NBD_OPT_SET_META_CONTEXT",
}


class NBDError(Exception):
    """An NBD failure. ``error`` is the server's error name (``NBD_REP_ERR_UNKNOWN``, ``EIO``, ...)
    or None when the client detected the problem; ``server_message`` is the server's text."""

    def __init__(self, message: str, *, error: str | None = None, server_message: str = "") -> None:
        super().__init__(message)
        self.error = error
        self.server_message = server_message


class NBDTimeoutError(NBDError, TimeoutError):
    """The server did not answer within the client's timeout."""


class BlockSizes(NamedTuple):
    minimum: int
    preferred: int
    maximum: int


def connect_error(where: str, exc: OSError) -> NBDError:
    if isinstance(exc, TimeoutError):
        return NBDTimeoutError(f"connecting to NBD server at {where} timed out")
    return NBDError(f"cannot connect to NBD server at {where}: {exc.strerror or exc}")


def command_error(cmd: int, offset: int, length: int, err: int, msg: str) -> NBDError:
    name = errno_name(err)
    what = "read" if cmd == NBD_CMD_READ else "block status"
    text = f"NBD {what} of {offset}+{length} failed: {name}" + (f": {msg}" if msg else "")
    return NBDError(text, error=name, server_message=msg)


def merge_ranges(
    extents: list[tuple[int, int, int]], keep: Callable[[int], bool]
) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for offset, length, flags in extents:
        if not keep(flags):
            continue
        if out and out[-1][0] + out[-1][1] == offset:
            out[-1] = (out[-1][0], out[-1][1] + length)
        else:
            out.append((offset, length))
    return out


def meta_query(export_name: str, contexts: list[str]) -> bytes:
    """Payload of NBD_OPT_SET/LIST_META_CONTEXT."""
    parts = [export_name.encode(), *(c.encode() for c in contexts)]
    out = U32.pack(len(parts[0])) + parts[0] + U32.pack(len(contexts))
    return out + b"".join(U32.pack(len(p)) + p for p in parts[1:])


def option_error(export_name: str, option: int, reply: int, payload: bytes) -> NBDError:
    name, msg = rep_error_name(reply), payload.decode(errors="replace")
    if name == "NBD_REP_ERR_TLS_REQD":
        text = "NBD server requires TLS; connect with tls_context"
    elif option == NBD_OPT_STARTTLS:
        text = "NBD server refused TLS (NBD_OPT_STARTTLS)"
    elif name == "NBD_REP_ERR_UNKNOWN":
        text = f"export {export_name!r} not found on NBD server"
    else:
        text = f"{OPTION_NAMES.get(option, option)} for export {export_name!r} failed"
    text += f": {name}" + (f": {msg}" if msg else "")
    return NBDError(text, error=name, server_message=msg)
