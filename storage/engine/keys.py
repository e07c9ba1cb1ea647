"""Repository keys: a random master key wrapped by a passphrase through scrypt (memory-hard).

The master key is 64 bytes: ``hash_key`` (keyed BLAKE3 digests) and ``enc_key`` (per-object
AES-256-GCM keys). Changing the passphrase re-wraps the same master key; no data is rewritten.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

WRAP_AAD = b"backupconsole-key-v1"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # 32 MiB of memory per derivation


class WrongPassphrase(Exception):
    """The passphrase does not open any key of the repository."""


@dataclass(frozen=True)
class MasterKey:
    hash_key: bytes
    enc_key: bytes

    @classmethod
    def generate(cls) -> MasterKey:
        raw = secrets.token_bytes(64)
        return cls(raw[:32], raw[32:])

    def raw(self) -> bytes:
        return self.hash_key + self.enc_key


def _kek(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def wrap(master: MasterKey, passphrase: str) -> dict[str, Any]:
    salt = os.urandom(16)
    nonce = os.urandom(12)  # a fresh KEK per salt, so the nonce is never reused under one key
    kek = _kek(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    sealed = AESGCM(kek).encrypt(nonce, master.raw(), WRAP_AAD)
    return {
        "kdf": "scrypt",
        "n": SCRYPT_N,
        "r": SCRYPT_R,
        "p": SCRYPT_P,
        "salt": base64.b64encode(salt).decode(),
        "wrapped": base64.b64encode(nonce + sealed).decode(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def unwrap(document: dict[str, Any], passphrase: str) -> MasterKey:
    if document.get("kdf") != "scrypt":
        raise ValueError(f"unknown key derivation {document.get('kdf')!r}")
    kek = _kek(
        passphrase,
        base64.b64decode(document["salt"]),
        int(document["n"]),
        int(document["r"]),
        int(document["p"]),
    )
    blob = base64.b64decode(document["wrapped"])
    try:
        raw = AESGCM(kek).decrypt(blob[:12], blob[12:], WRAP_AAD)
    except InvalidTag:
        raise WrongPassphrase("wrong passphrase for this repository") from None
    return MasterKey(raw[:32], raw[32:])


def dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=1, sort_keys=True).encode()
