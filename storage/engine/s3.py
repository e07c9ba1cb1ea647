"""S3 backend: a bucket and a key prefix; conditional puts, immutability with Object Lock.

The same object names as the filesystem backend (docs/repository-format.md), under ``prefix``.
Works with AWS S3 and S3-compatible stores that implement conditional writes (``If-None-Match: *``)
and, for immutability, Object Lock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from storage.engine.backend import (
    BackendError,
    ObjectInfo,
    ObjectLocked,
    ObjectMissing,
    StorageFull,
)

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "403", "Forbidden"})
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
# S3 itself never fills up; these are what S3-compatible stores (Ceph RGW, MinIO) answer instead.
_FULL_CODES = frozenset({"QuotaExceeded", "XMinioStorageFull", "InsufficientStorage"})
# AWS answers 409 when another conditional write on the same key is in flight; it asks for a retry.
_CONFLICT_RETRIES = 5


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class S3Backend:
    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        client: Any = None,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        max_retries: int = 5,
        page_size: int = 1000,
    ) -> None:
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.page_size = page_size
        if client is None:
            config = Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                # Here botocore's max_attempts counts retries after the first try, so a request
                # makes up to max_retries + 1 calls; "standard" backs off with jitter and also
                # retries throttling and 5xx answers.
                retries={"max_attempts": max_retries, "mode": "standard"},
                # S3-compatible stores (MinIO, Ceph) at a custom endpoint rarely have the wildcard
                # DNS that virtual-hosted addressing needs; path style works everywhere.
                s3={"addressing_style": "path"} if endpoint_url else None,
            )
            # A session of our own: creating clients from boto3's default session is not
            # thread-safe, using one client from many threads is.
            session = boto3.session.Session(
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                region_name=region,
            )
            client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self._client = client
        self.endpoint = str(getattr(client.meta, "endpoint_url", endpoint_url or "AWS S3"))
        # Learnt lazily, once; a race only repeats a harmless request.
        self._versioned: bool | None = None
        self._bucket_checked = False

    # -- helpers -------------------------------------------------------------------------------

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        # Same rules as the filesystem backend, so a key valid on one is valid on the other.
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise BackendError(f"invalid object key {key!r}")
        return self.prefix + key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) :]

    def _fail(self, exc: Exception, what: str) -> NoReturn:
        """Raise the BackendError for ``exc`` (chained), naming the bucket and endpoint."""
        where = f"bucket {self.bucket!r} at {self.endpoint}"
        if isinstance(exc, ClientError):
            code = _code(exc)
            message = exc.response.get("Error", {}).get("Message") or code
            if code == "NoSuchBucket":
                raise BackendError(
                    f"{what}: S3 bucket {self.bucket!r} does not exist at {self.endpoint}."
                ) from exc
            if code in _CREDENTIAL_CODES:
                raise BackendError(
                    f"{what}: the S3 credentials were rejected by {self.endpoint} "
                    f"(bucket {self.bucket!r}): {message}"
                ) from exc
            if code in _DENIED_CODES or _status(exc) == 403:
                # AWS also answers 403 for a missing object when s3:ListBucket is not granted.
                raise BackendError(
                    f"{what}: access denied to {where}; the credentials need s3:GetObject, "
                    "s3:PutObject, s3:DeleteObject, s3:ListBucket and, on versioned buckets, "
                    "s3:ListBucketVersions and s3:DeleteObjectVersion."
                ) from exc
            if code in _FULL_CODES or _status(exc) == 507:
                raise StorageFull(f"{what}: no space left in {where}: {message}") from exc
            raise BackendError(f"{what} in {where}: {code}: {message}") from exc
        if isinstance(exc, NoCredentialsError):
            raise BackendError(f"{what}: no S3 credentials are configured for {where}.") from exc
        if isinstance(exc, BotoConnectionError | HTTPClientError):
            raise BackendError(
                f"{what}: cannot reach the S3 endpoint {self.endpoint} (bucket {self.bucket!r}): "
                f"{exc}"
            ) from exc
        raise BackendError(f"{what} in {where}: {exc}") from exc

    def _check_bucket(self, what: str) -> None:
        """HEAD answers a bare 404 for a missing bucket too; tell the two apart once."""
        if self._bucket_checked:
            return
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _status(exc) == 404:
                raise BackendError(
                    f"{what}: S3 bucket {self.bucket!r} does not exist at {self.endpoint}."
                ) from exc
            self._fail(exc, what)
        except BotoCoreError as exc:
            self._fail(exc, what)
        self._bucket_checked = True

    def _head(self, key: str, what: str, version_id: str | None = None) -> dict[str, Any] | None:
        """The object's headers, or None if it does not exist (the bucket does)."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key)}
        if version_id is not None:
            args["VersionId"] = version_id
        try:
            head: dict[str, Any] = self._client.head_object(**args)
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES or _status(exc) == 404:
                self._check_bucket(what)
                return None
            self._fail(exc, what)
        except BotoCoreError as exc:
            self._fail(exc, what)
        self._bucket_checked = True
        return head

    # -- the Backend protocol ------------------------------------------------------------------

    def put(
        self,
        key: str,
        data: bytes | bytearray | memoryview,
        *,
        if_absent: bool = True,
        retain_until: datetime | None = None,
    ) -> bool:
        # botocore adds a CRC32 checksum of the body by default, which S3 verifies and which
        # also satisfies Object Lock's requirement for an integrity header on locked puts.
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "Body": data if isinstance(data, bytes) else bytes(data),
            "ContentType": "application/octet-stream",
        }
        if if_absent:
            # Atomic on the server: no window between a check and the write.
            args["IfNoneMatch"] = "*"
        if retain_until is not None:
            args["ObjectLockMode"] = "COMPLIANCE"
            args["ObjectLockRetainUntilDate"] = _utc(retain_until)
        what = f"writing {key}"
        for attempt in range(_CONFLICT_RETRIES):
            try:
                self._client.put_object(**args)
                return True
            except ClientError as exc:
                code = _code(exc)
                if code == "PreconditionFailed" or _status(exc) == 412:
                    return False
                if code == "ConditionalRequestConflict" and attempt + 1 < _CONFLICT_RETRIES:
                    time.sleep(0.1 * (attempt + 1))
                    continue
                if code == "InvalidRequest" and retain_until is not None:
                    raise BackendError(
                        f"{what}: bucket {self.bucket!r} at {self.endpoint} refused a retention "
                        f"date ({exc.response.get('Error', {}).get('Message', code)}); "
                        "immutability needs a bucket created with Object Lock enabled."
                    ) from exc
                self._fail(exc, what)
            except BotoCoreError as exc:
                self._fail(exc, what)
        raise AssertionError("unreachable")  # the loop returns or raises

    def get(self, key: str) -> bytes:
        what = f"reading {key}"
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            body: bytes = response["Body"].read()
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                raise ObjectMissing(f"{key} is missing from {self.describe()}") from None
            self._fail(exc, what)
        except BotoCoreError as exc:
            self._fail(exc, what)
        return body

    def exists(self, key: str) -> bool:
        return self._head(key, f"checking {key}") is not None

    def stat(self, key: str) -> ObjectInfo:
        head = self._head(key, f"reading the details of {key}")
        if head is None:
            raise ObjectMissing(f"{key} is missing from {self.describe()}")
        return ObjectInfo(key, int(head["ContentLength"]), _utc(head["LastModified"]))

    def touch(self, key: str) -> bool:
        # S3 cannot set LastModified; a copy onto itself rewrites the object, so it becomes now.
        # REPLACE is required: S3 refuses a self-copy that changes nothing. We set no metadata
        # on put, so replacing it with none loses nothing. The copy is server-side (chunks are
        # far below the 5 GB copy limit). On a versioned (Object Lock) bucket this adds a new
        # version: the old one keeps its retention, so the data stays protected, and delete()
        # removes every version once none is retained.
        full = self._key(key)
        try:
            self._client.copy_object(
                Bucket=self.bucket,
                Key=full,
                CopySource={"Bucket": self.bucket, "Key": full},
                MetadataDirective="REPLACE",
                ContentType="application/octet-stream",
            )
        except ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                return False
            self._fail(exc, f"touching {key}")
        except BotoCoreError as exc:
            self._fail(exc, f"touching {key}")
        return True

    def _is_versioned(self) -> bool:
        if self._versioned is None:
            try:
                status = self._client.get_bucket_versioning(Bucket=self.bucket).get("Status")
            except (ClientError, BotoCoreError) as exc:
                self._fail(exc, "reading the bucket's versioning")
            # "Suspended" buckets still hold the versions written while it was enabled.
            self._versioned = status in ("Enabled", "Suspended")
        return self._versioned

    def _versions(self, full_key: str, what: str) -> list[str]:
        """Version ids (object versions, then delete markers) of exactly ``full_key``, oldest
        first."""
        versions: list[str] = []
        markers: list[str] = []
        try:
            pages = self._client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=full_key
            )
            for page in pages:
                # Prefix matches "chunks/ab/x" and "chunks/ab/xy"; keep only the exact key.
                versions += [
                    v["VersionId"] for v in page.get("Versions", []) if v["Key"] == full_key
                ]
                markers += [
                    m["VersionId"] for m in page.get("DeleteMarkers", []) if m["Key"] == full_key
                ]
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, what)
        # S3 lists newest first. Deleting oldest first means the visible object does not change
        # until its last version goes, and a retained original stops us before anything is gone.
        versions.reverse()
        markers.reverse()
        return versions + markers

    def delete(self, key: str) -> None:
        full = self._key(key)
        what = f"deleting {key}"
        if not self._is_versioned():
            try:
                self._client.delete_object(Bucket=self.bucket, Key=full)  # 204 if already gone
            except (ClientError, BotoCoreError) as exc:
                self._fail(exc, what)
            return
        # On a versioned bucket a plain delete only adds a delete marker and keeps the data:
        # remove each version. Only the versions listed here go, so a writer that puts the key
        # again meanwhile keeps its new version.
        for version_id in self._versions(full, what):
            try:
                self._client.delete_object(Bucket=self.bucket, Key=full, VersionId=version_id)
            except ClientError as exc:
                if _code(exc) in _MISSING_CODES or _code(exc) == "NoSuchVersion":
                    continue  # deleted concurrently
                if _code(exc) in _DENIED_CODES or _status(exc) == 403:
                    self._raise_if_locked(key, version_id, exc)
                self._fail(exc, what)
            except BotoCoreError as exc:
                self._fail(exc, what)

    def _raise_if_locked(self, key: str, version_id: str, denied: ClientError) -> None:
        """Raise ObjectLocked when a refused delete is due to retention or a legal hold.

        Read through head_object: get_object_retention needs another permission and some
        servers (moto 5.2) answer it with HTTP 500.
        """
        head = self._head(key, f"reading the retention of {key}", version_id=version_id)
        if head is None:
            return
        until = head.get("ObjectLockRetainUntilDate")
        if until is not None and _utc(until) > datetime.now(UTC):
            mode = head.get("ObjectLockMode", "COMPLIANCE")
            raise ObjectLocked(
                f"{key} is immutable until {_utc(until):%Y-%m-%d %H:%M} UTC "
                f"(S3 Object Lock, {mode} mode, in {self.describe()})"
            ) from denied
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            raise ObjectLocked(
                f"{key} is under an S3 Object Lock legal hold in {self.describe()}"
            ) from denied

    def flush(self) -> None:
        """Nothing to do: S3 acknowledges a put only once the object is durable."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        what = f"listing {prefix or 'the repository'}"
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=self.prefix + prefix,
                PaginationConfig={"PageSize": self.page_size},
            )
            for page in pages:
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        self._relative(item["Key"]), int(item["Size"]), _utc(item["LastModified"])
                    )
        except (ClientError, BotoCoreError) as exc:
            self._fail(exc, what)

    # -- S3 only -------------------------------------------------------------------------------

    def object_lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock, without which immutability must be refused."""
        try:
            response = self._client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) == "ObjectLockConfigurationNotFoundError":
                return False
            self._fail(exc, "reading the bucket's Object Lock configuration")
        except BotoCoreError as exc:
            self._fail(exc, "reading the bucket's Object Lock configuration")
        config = response.get("ObjectLockConfiguration", {})
        return bool(config.get("ObjectLockEnabled") == "Enabled")
