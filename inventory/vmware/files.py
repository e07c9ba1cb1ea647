"""Datastore files over vSphere's HTTP file interface (``/folder/<path>?dcPath=&dsName=``):
Range reads of snapshot disks (the NBD/NBDSSL transport) and streamed uploads (restores).

Every request carries the session cookie (vCenter answers 401 without one) and goes through the
same pinned-certificate TLS as the SOAP session; a 401 logs in again once. Plain http.client,
not requests: requests lets REQUESTS_CA_BUNDLE from the environment override the trust given."""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterable
from urllib.parse import quote

from inventory.vmware.session import Session, VSphereError, VSphereUnreachable

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def folder_url(datacenter: str, datastore: str, path: str) -> str:
    return (
        f"/folder/{quote(path)}?dcPath={quote(datacenter, safe='')}"
        f"&dsName={quote(datastore, safe='')}"
    )


class DatastoreHTTP:
    """One keep-alive HTTPS connection to the endpoint; not shared between threads."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._conn: http.client.HTTPSConnection | None = None

    def _request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Iterable[bytes] | bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self.session.endpoint.https()
            try:
                self._conn.request(
                    method, url, body=body, headers={**headers, "Cookie": self.session.cookie}
                )
                response = self._conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2 or body is not None:  # a consumed upload body cannot be replayed
                    raise VSphereUnreachable(f"{method} {url.split('?')[0]}: {exc}") from exc
                continue
            if response.status == 401 and attempt == 1 and body is None:
                self.session.renew()  # the session expired: log in again, then repeat
                continue
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        raise AssertionError("unreachable")

    def read(self, url: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; past the end of the file the disk reads as zeros
        (a thin flat file may be shorter than the disk's capacity)."""
        status, headers, data = self._request(
            "GET", url, {"Range": f"bytes={offset}-{offset + length - 1}"}
        )
        if status == 416:
            return bytes(length)
        if status == 200:  # the server ignored Range and sent the whole file
            data = data[offset : offset + length]
        elif status == 206:
            match = _CONTENT_RANGE.match(headers.get("content-range", ""))
            if match is None or int(match.group(1)) != offset:
                raise VSphereError(f"unexpected Content-Range {headers.get('content-range')!r}")
        else:
            raise VSphereError(f"GET {url.split('?')[0]}: HTTP {status} {data[:200]!r}")
        if len(data) > length:
            raise VSphereError(f"GET {url.split('?')[0]}: {len(data)} bytes for {length} asked")
        return data + bytes(length - len(data))

    def exists(self, url: str) -> bool:
        status, _headers, _data = self._request("HEAD", url, {})
        return status == 200

    def put(self, url: str, body: Iterable[bytes] | bytes, size: int) -> None:
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        status, _headers, data = self._request("PUT", url, headers, body)
        if status not in (200, 201, 204):
            raise VSphereError(f"PUT {url.split('?')[0]}: HTTP {status} {data[:200]!r}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
