"""The S3 backend against a real S3 server (moto), and the contract it shares with the filesystem
backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from storage.engine.backend import Backend, BackendError, ObjectLocked, ObjectMissing
from storage.engine.s3 import S3Backend

MakeS3 = Callable[..., S3Backend]
ALL_BYTES = bytes(range(256)) * 4


# -- the contract of every backend (filesystem, S3, versioned S3) ------------------------------


def test_put_get_round_trip(backend: Backend) -> None:
    assert backend.put("chunks/ab/ab01", ALL_BYTES) is True
    assert backend.get("chunks/ab/ab01") == ALL_BYTES
    assert backend.exists("chunks/ab/ab01")
    assert backend.put("config", b"") is True
    assert backend.get("config") == b""


def test_if_absent_never_overwrites(backend: Backend) -> None:
    assert backend.put("snapshots/vm-1/p1", b"first") is True
    assert backend.put("snapshots/vm-1/p1", b"second") is False
    assert backend.get("snapshots/vm-1/p1") == b"first"


def test_put_without_if_absent_replaces(backend: Backend) -> None:
    backend.put("gc/last", b"old")
    assert backend.put("gc/last", b"new", if_absent=False) is True
    assert backend.get("gc/last") == b"new"


def test_racing_if_absent_puts_have_one_winner(backend: Backend) -> None:
    threads = 8
    start = threading.Barrier(threads)
    results: dict[int, bool] = {}
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait()
            results[n] = backend.put("locks/maintenance", f"owner-{n}".encode())
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors
    winners = [n for n, written in results.items() if written]
    assert len(results) == threads
    assert len(winners) == 1
    assert backend.get("locks/maintenance") == f"owner-{winners[0]}".encode()


def test_missing_object(backend: Backend) -> None:
    assert not backend.exists("chunks/00/none")
    with pytest.raises(ObjectMissing, match="chunks/00/none"):
        backend.get("chunks/00/none")
    with pytest.raises(ObjectMissing, match="chunks/00/none"):
        backend.stat("chunks/00/none")


def test_stat(backend: Backend) -> None:
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2)
    backend.put("indexes/cd/cd02", b"x" * 100)
    info = backend.stat("indexes/cd/cd02")
    assert info.key == "indexes/cd/cd02"
    assert info.size == 100
    assert info.modified.tzinfo is not None
    assert info.modified.utcoffset() == timedelta(0)
    assert before <= info.modified <= datetime.now(UTC) + timedelta(seconds=2)


def test_list_gives_relative_keys_under_the_prefix(backend: Backend) -> None:
    chunks = {f"chunks/{n % 4:02x}/{n:064x}" for n in range(30)}
    for key in chunks:
        backend.put(key, key.encode())
    backend.put("indexes/00/" + "f" * 64, b"i")
    backend.put("config", b"{}")

    listed = list(backend.list("chunks/"))
    assert {info.key for info in listed} == chunks
    assert all(info.size == len(info.key) for info in listed)
    assert {info.key for info in backend.list("chunks/01/")} == {
        k for k in chunks if k.startswith("chunks/01/")
    }
    assert {info.key for info in backend.list("")} == chunks | {"indexes/00/" + "f" * 64, "config"}
    assert list(backend.list("snapshots/")) == []


def test_touch_advances_modification_time(backend: Backend) -> None:
    backend.put("chunks/ef/ef03", b"data")
    before = backend.stat("chunks/ef/ef03").modified
    time.sleep(1.1)  # S3 times have 1 s resolution
    assert backend.touch("chunks/ef/ef03") is True
    assert backend.stat("chunks/ef/ef03").modified > before
    assert backend.get("chunks/ef/ef03") == b"data"
    assert backend.touch("chunks/ef/none") is False
    assert not backend.exists("chunks/ef/none")


def test_delete(backend: Backend) -> None:
    backend.put("writers/w1", b"w")
    backend.touch("writers/w1")
    backend.delete("writers/w1")
    assert not backend.exists("writers/w1")
    with pytest.raises(ObjectMissing):
        backend.get("writers/w1")
    assert list(backend.list("writers/")) == []
    backend.delete("writers/w1")  # already gone: no error
    assert backend.put("writers/w1", b"again") is True
    assert backend.get("writers/w1") == b"again"


@pytest.mark.parametrize("key", ["/etc/passwd", "chunks/../config", "../outside"])
def test_invalid_keys_are_refused(backend: Backend, key: str) -> None:
    with pytest.raises(BackendError, match="invalid object key"):
        backend.put(key, b"x")
    with pytest.raises(BackendError, match="invalid object key"):
        backend.get(key)


# -- S3 specifics ------------------------------------------------------------------------------


def test_prefix_and_describe(
    s3_bucket: tuple[str, str], make_s3_backend: MakeS3, s3_client: Any
) -> None:
    _endpoint, bucket = s3_bucket
    one = make_s3_backend(bucket, prefix="/tenants/one")
    other = make_s3_backend(bucket, prefix="tenants/other/")
    assert one.describe() == f"s3://{bucket}/tenants/one"
    assert make_s3_backend(bucket).describe() == f"s3://{bucket}"

    one.put("config", b"1")
    other.put("config", b"2")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == ["tenants/one/config", "tenants/other/config"]
    assert one.get("config") == b"1"
    assert [info.key for info in one.list("")] == ["config"]
    assert one.stat("config").key == "config"


def test_list_paginates(s3_bucket: tuple[str, str], make_s3_backend: MakeS3) -> None:
    _endpoint, bucket = s3_bucket
    backend = make_s3_backend(bucket, prefix="repo", page_size=7)
    calls: list[str] = []
    backend._client.meta.events.register(
        "after-call.s3.ListObjectsV2", lambda **kwargs: calls.append("page")
    )
    keys = {f"chunks/aa/{n:04d}" for n in range(30)}
    for key in keys:
        backend.put(key, b"x")
    assert {info.key for info in backend.list("chunks/")} == keys
    assert len(calls) == 5  # 30 objects, 7 a page


def test_touch_on_versioned_bucket_keeps_content(
    s3_lock_bucket: tuple[str, str], make_s3_backend: MakeS3, s3_client: Any
) -> None:
    _endpoint, bucket = s3_lock_bucket
    backend = make_s3_backend(bucket)
    backend.put("chunks/01/0101", b"content")
    assert backend.touch("chunks/01/0101") is True
    # The copy is a second version; both hold the content.
    versions = s3_client.list_object_versions(Bucket=bucket, Prefix="chunks/01/0101")["Versions"]
    assert len(versions) == 2
    assert backend.get("chunks/01/0101") == b"content"


def test_delete_removes_every_version_and_only_that_key(
    s3_lock_bucket: tuple[str, str], make_s3_backend: MakeS3, s3_client: Any
) -> None:
    _endpoint, bucket = s3_lock_bucket
    backend = make_s3_backend(bucket)
    backend.put("chunks/02/0202", b"v1")
    backend.put("chunks/02/0202", b"v2", if_absent=False)
    backend.touch("chunks/02/0202")
    backend.put("chunks/02/020299", b"neighbour")  # shares the key as a prefix
    backend.delete("chunks/02/0202")

    listing = s3_client.list_object_versions(Bucket=bucket, Prefix="chunks/02/")
    assert [v["Key"] for v in listing.get("Versions", [])] == ["chunks/02/020299"]
    assert listing.get("DeleteMarkers", []) == []
    assert backend.get("chunks/02/020299") == b"neighbour"


def test_retained_object_cannot_be_deleted(
    s3_lock_bucket: tuple[str, str], make_s3_backend: MakeS3
) -> None:
    _endpoint, bucket = s3_lock_bucket
    backend = make_s3_backend(bucket)
    until = datetime.now(UTC) + timedelta(days=30)
    assert backend.put("snapshots/vm-1/p1", b"manifest", retain_until=until) is True
    backend.touch("snapshots/vm-1/p1")  # adds an unretained version; the original stays locked

    with pytest.raises(ObjectLocked) as raised:
        backend.delete("snapshots/vm-1/p1")
    message = str(raised.value)
    assert f"{until:%Y-%m-%d %H:%M} UTC" in message
    assert "snapshots/vm-1/p1" in message
    assert isinstance(raised.value.__cause__, ClientError)
    assert backend.get("snapshots/vm-1/p1") == b"manifest"
    assert backend.exists("snapshots/vm-1/p1")


def test_retention_needs_object_lock(s3_bucket: tuple[str, str], make_s3_backend: MakeS3) -> None:
    _endpoint, bucket = s3_bucket
    backend = make_s3_backend(bucket)
    with pytest.raises(BackendError, match="Object Lock"):
        backend.put("config", b"{}", retain_until=datetime.now(UTC) + timedelta(days=1))
    assert not backend.exists("config")


def test_object_lock_enabled(
    s3_bucket: tuple[str, str], s3_lock_bucket: tuple[str, str], make_s3_backend: MakeS3
) -> None:
    assert make_s3_backend(s3_lock_bucket[1]).object_lock_enabled() is True
    assert make_s3_backend(s3_bucket[1]).object_lock_enabled() is False


def test_missing_bucket_names_it(make_s3_backend: MakeS3, moto_server: str) -> None:
    backend = make_s3_backend("bc-test-no-such-bucket")
    operations: list[Callable[[], object]] = [
        lambda: backend.get("config"),
        lambda: backend.put("config", b"{}"),
        lambda: backend.exists("config"),
        lambda: backend.stat("config"),
        lambda: backend.touch("config"),
        lambda: backend.delete("config"),
        lambda: list(backend.list("chunks/")),
        backend.object_lock_enabled,
    ]
    for operation in operations:
        with pytest.raises(BackendError) as raised:
            operation()
        assert not isinstance(raised.value, ObjectMissing)
        assert "bc-test-no-such-bucket" in str(raised.value)
        assert "does not exist" in str(raised.value)
        assert moto_server in str(raised.value)
        assert isinstance(raised.value.__cause__, ClientError)


def test_unreachable_endpoint_fails_in_bounded_time(closed_port: int) -> None:
    endpoint = f"http://127.0.0.1:{closed_port}"
    backend = S3Backend(
        "bc-test-anything",
        endpoint_url=endpoint,
        region="us-east-1",
        access_key="testing",
        secret_key="testing",
        connect_timeout=2,
        read_timeout=2,
        max_retries=1,
    )
    started = time.monotonic()
    with pytest.raises(BackendError) as raised:
        backend.get("config")
    assert time.monotonic() - started < 15
    message = str(raised.value)
    assert endpoint in message
    assert "bc-test-anything" in message
    assert "cannot reach" in message
    assert isinstance(raised.value.__cause__, BotoCoreError)


def test_client_config_defaults(s3_bucket: tuple[str, str], make_s3_backend: MakeS3) -> None:
    config = make_s3_backend(s3_bucket[1])._client.meta.config
    assert config.connect_timeout == 10
    assert config.read_timeout == 60
    # botocore reads retries={"max_attempts": 5} as 5 retries after the first call.
    assert config.retries == {"mode": "standard", "total_max_attempts": 6}
