import pytest
from django.db import connection as db

from backupconsole.crypto import SecretDecryptionError, decrypt_secret, encrypt_secret
from tests.factories import ConnectionFactory


def test_round_trip_and_fresh_nonce_each_time():
    a = encrypt_secret("hunter2", "p")
    b = encrypt_secret("hunter2", "p")
    assert a != b and "hunter2" not in a
    assert decrypt_secret(a, "p") == decrypt_secret(b, "p") == "hunter2"


def test_ciphertext_is_bound_to_its_purpose():
    sealed = encrypt_secret("hunter2", "inventory.Connection.secret")
    with pytest.raises(SecretDecryptionError):
        decrypt_secret(sealed, "storage.Repository.secret")


def test_rotated_keys_still_decrypt_old_values(settings):
    settings.CREDENTIAL_KEYS = ["old-key"]
    sealed = encrypt_secret("hunter2", "p")
    settings.CREDENTIAL_KEYS = ["new-key", "old-key"]
    assert decrypt_secret(sealed, "p") == "hunter2"
    assert encrypt_secret("x", "p").split(":")[1] != sealed.split(":")[1]
    settings.CREDENTIAL_KEYS = ["new-key"]
    with pytest.raises(SecretDecryptionError, match="not configured"):
        decrypt_secret(sealed, "p")


@pytest.mark.django_db
def test_connection_secret_is_stored_encrypted():
    conn = ConnectionFactory()
    conn.set_secret("s3cr3t-password")
    conn.save()
    with db.cursor() as cursor:
        cursor.execute("SELECT secret FROM inventory_connection WHERE id = %s", [conn.pk])
        (stored,) = cursor.fetchone()
    assert "s3cr3t-password" not in stored
    conn.refresh_from_db()
    assert conn.get_secret() == "s3cr3t-password"
