"""Encryption of credentials at rest (hypervisor passwords, S3 secret keys).

AES-256-GCM under a key derived with HKDF from one of ``settings.CREDENTIAL_KEYS``. The stored form
is ``v1:<key id>:<base64(nonce || ciphertext+tag)>``; the key id lets rotated keys keep decrypting
older values. The associated data names the field, so a ciphertext copied into another kind of
field does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import os
from functools import cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

VERSION = "v1"


class SecretDecryptionError(Exception):
    """A stored secret cannot be decrypted with any configured key."""


@cache
def _derive(material: str) -> tuple[str, bytes]:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"backupconsole credentials v1"
    ).derive(material.encode())
    return hashlib.sha256(key).hexdigest()[:8], key


def _keys() -> list[tuple[str, bytes]]:
    return [_derive(material) for material in settings.CREDENTIAL_KEYS]


def encrypt_secret(plaintext: str, purpose: str) -> str:
    if plaintext == "":
        return ""
    key_id, key = _keys()[0]
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), purpose.encode())
    return f"{VERSION}:{key_id}:{base64.b64encode(nonce + sealed).decode()}"


def decrypt_secret(stored: str, purpose: str) -> str:
    if stored == "":
        return ""
    try:
        version, key_id, payload = stored.split(":", 2)
    except ValueError:
        raise SecretDecryptionError("stored secret is not in a known format") from None
    if version != VERSION:
        raise SecretDecryptionError(f"stored secret has unknown version {version!r}")
    blob = base64.b64decode(payload)
    for candidate_id, key in _keys():
        if candidate_id != key_id:
            continue
        try:
            return AESGCM(key).decrypt(blob[:12], blob[12:], purpose.encode()).decode()
        except InvalidTag:
            break
    raise SecretDecryptionError(
        f"stored secret was encrypted with key {key_id}, which is not configured or does not match"
    )
