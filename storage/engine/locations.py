"""Open a backend from a location string: a directory path, or ``s3://bucket/prefix``."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from storage.engine.backend import Backend
from storage.engine.fs import FilesystemBackend


def open_backend(
    location: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
) -> Backend:
    if location.startswith("s3://"):
        from storage.engine.s3 import S3Backend

        parsed = urlparse(location)
        return S3Backend(
            parsed.netloc,
            prefix=parsed.path.lstrip("/"),
            endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL"),
            region=region,
            access_key=access_key or os.environ.get("AWS_ACCESS_KEY_ID"),
            secret_key=secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY"),
        )
    return FilesystemBackend(location)
