"""Storage fixtures: a real S3 server (moto in server mode, on 127.0.0.1) and fresh buckets.

The server is required, never optional: if it cannot start, the tests fail with its output.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from storage.engine.backend import Backend
from storage.engine.fs import FilesystemBackend
from storage.engine.s3 import S3Backend
from tests.processes import stop

REGION = "us-east-1"
# moto accepts any credentials; explicit ones keep the tests away from the machine's AWS config.
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
STARTUP_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    # http.client ignores proxy variables, which must not route 127.0.0.1 elsewhere.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/")
        conn.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        conn.close()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a moto S3 server started for this session."""
    executable = Path(sys.executable).parent / "moto_server"
    if not executable.exists():
        pytest.fail(f"{executable} not found: install moto[server] in the test environment")
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    port = _free_port()
    # A file rather than a pipe: nobody drains a pipe during the session, and a full one blocks.
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(executable), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _answers(port):
            if proc.poll() is not None:
                pytest.fail(
                    f"moto_server exited with {proc.returncode} before answering:\n"
                    + log_path.read_text(errors="replace")
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"moto_server did not answer on 127.0.0.1:{port} within "
                    f"{STARTUP_TIMEOUT:.0f} s:\n" + log_path.read_text(errors="replace")
                )
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc, timeout=10)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound but not listening, and held for the
    test so no other process takes it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_client(moto_server: str) -> Any:
    """A raw boto3 client on the test server, to set up and inspect behind the backend."""
    return boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    ).client(
        "s3",
        endpoint_url=moto_server,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def _bucket_name() -> str:
    # S3 rules: 3-63 characters, lower case letters, digits and hyphens.
    return f"bc-test-{uuid.uuid4().hex[:20]}"


@pytest.fixture
def s3_bucket(moto_server: str, s3_client: Any) -> tuple[str, str]:
    """(endpoint, bucket): a fresh bucket without versioning or Object Lock."""
    bucket = _bucket_name()
    s3_client.create_bucket(Bucket=bucket)
    return moto_server, bucket


@pytest.fixture
def s3_lock_bucket(moto_server: str, s3_client: Any) -> tuple[str, str]:
    """(endpoint, bucket): a fresh bucket with Object Lock (hence versioning) enabled."""
    bucket = _bucket_name()
    s3_client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    return moto_server, bucket


@pytest.fixture
def make_s3_backend(moto_server: str) -> Callable[..., S3Backend]:
    """Build an S3Backend on the test server: ``make_s3_backend(bucket, prefix=..., ...)``."""

    def make(bucket: str, **kwargs: Any) -> S3Backend:
        options: dict[str, Any] = {
            "endpoint_url": moto_server,
            "region": REGION,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
        }
        options.update(kwargs)
        return S3Backend(bucket, **options)

    return make


@pytest.fixture(params=["fs", "s3", "s3-versioned"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each backend in turn, empty, for the contract every backend must keep."""
    if request.param == "fs":
        return FilesystemBackend(tmp_path / "repo")
    # Looked up only here, so the filesystem cases do not need the S3 server.
    # The versioned (Object Lock) bucket checks that delete leaves no old version behind.
    fixture = "s3_lock_bucket" if request.param == "s3-versioned" else "s3_bucket"
    _endpoint, bucket = request.getfixturevalue(fixture)
    make: Callable[..., S3Backend] = request.getfixturevalue("make_s3_backend")
    return make(bucket, prefix="repo")
