"""inventory.kvm.nbd against real qemu-nbd servers (unix sockets and 127.0.0.1 only): reads equal
``qemu-img convert`` output, extents match what qemu-io wrote, dirty bitmaps, errors, TLS."""

from __future__ import annotations

import itertools
import json
import random
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from inventory.kvm.nbd import NBDClient, NBDError, NBDTimeoutError
from tests.kvm.nbd_fixtures import (  # noqa: F401 (fixtures are used by name)
    NBDServer,
    free_port,
    make_image,
    nbd_server,
    qemu_nbd_tools,
    raw_content,
    run,
    silent_server,
    tls_dir,
)

KiB = 1024
MiB = 1024 * KiB
SIZE = 8 * MiB
CLUSTER = 64 * KiB  # qcow2 default cluster size
DATA = [(1 * MiB, 64 * KiB), (3 * MiB + 4 * KiB, 100 * KiB), (SIZE - 4 * KiB, 4 * KiB)]
ZEROED = (5 * MiB, 128 * KiB)
LAYOUT = [
    "write -P 0xab 1M 64k",
    f"write -P 0xcd {3 * MiB + 4 * KiB} 100k",  # not cluster aligned
    "write -z 5M 128k",
    f"write -P 0xef {SIZE - 4 * KiB} 4k",  # the export's last bytes
]
Start = Callable[..., NBDServer]


def connect(server: NBDServer, *contexts: str, **kwargs: float) -> NBDClient:
    assert server.socket is not None
    return NBDClient.connect_unix(server.socket, server.export, meta_contexts=contexts, **kwargs)


def flags_over(extents: list[tuple[int, int, int]], offset: int, length: int) -> set[int]:
    return {f for o, n, f in extents if o < offset + length and offset < o + n}


@pytest.fixture
def layout_image(tmp_path: Path, qemu_nbd_tools: None) -> Path:  # noqa: F811
    return make_image(tmp_path / "disk.qcow2", SIZE, LAYOUT)


def test_handshake_reports_export(layout_image: Path, nbd_server: Start) -> None:  # noqa: F811
    with connect(nbd_server(layout_image, "disk")) as client:
        assert client.size == SIZE
        assert client.read_only  # qemu-nbd --read-only
        assert client.structured_replies
        assert client.meta_contexts == {}
        assert 1 <= client.block_sizes.minimum <= client.block_sizes.preferred
        assert client.block_sizes.maximum == 32 * MiB  # what QEMU 7.2 announces
    with pytest.raises(NBDError, match="closed"):
        client.read(0, 512)
    client.close()  # idempotent


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_read_equals_qemu_img_convert(tmp_path: Path, nbd_server: Start, fmt: str) -> None:  # noqa: F811
    image = make_image(tmp_path / f"disk.{fmt}", SIZE, LAYOUT, fmt=fmt)
    reference = raw_content(image, fmt)
    with connect(nbd_server(image, "disk", fmt=fmt)) as client:
        assert client.read(0, SIZE) == reference
        for offset, length in DATA:
            assert client.read(offset, length) == reference[offset : offset + length]
        assert client.read(0, 64 * KiB) == bytes(64 * KiB)  # never written
        assert client.read(*ZEROED) == bytes(ZEROED[1])
        client.request_size = 64 * KiB  # one read becomes 128 pipelined requests
        assert client.read(0, SIZE) == reference


def test_readinto_a_reused_buffer_reads_holes_as_zeros(tmp_path: Path, nbd_server: Start) -> None:  # noqa: F811
    image = make_image(tmp_path / "disk.qcow2", SIZE, LAYOUT)
    reference = raw_content(image)
    buffer = memoryview(bytearray(b"\xff" * SIZE))  # stale bytes, as in the writer's pool
    with connect(nbd_server(image, "disk")) as client:
        client.request_size = 64 * KiB  # pipelined pieces, holes among them
        client.readinto(0, buffer)
        assert bytes(buffer) == reference
        offset, length = ZEROED
        buffer[:length] = b"\xee" * length
        client.readinto(offset, buffer[:length])
        assert bytes(buffer[:length]) == bytes(length)


def test_read_larger_than_server_maximum_is_split(tmp_path: Path, nbd_server: Start) -> None:  # noqa: F811
    size = 40 * MiB
    image = make_image(tmp_path / "big.qcow2", size, [f"write -P 0x5a {32 * MiB - 4 * KiB} 8k"])
    with connect(nbd_server(image, "big")) as client:
        client.request_size = 1 << 30  # capped at the server's 32 MiB maximum
        assert client.max_request == 32 * MiB
        assert client.read(0, size) == raw_content(image)


def test_base_allocation_matches_written_layout(layout_image: Path, nbd_server: Start) -> None:  # noqa: F811
    reference = raw_content(layout_image)
    with connect(nbd_server(layout_image, "disk"), "base:allocation") as client:
        extents = client.block_status("base:allocation")
        # Contiguous cover of the export, merged (no two neighbours share flags).
        assert extents[0][0] == 0
        assert sum(n for _, n, _ in extents) == SIZE
        assert all(a[0] + a[1] == b[0] and a[2] != b[2] for a, b in itertools.pairwise(extents))
        for offset, length in DATA:
            assert flags_over(extents, offset, length) == {0}  # allocated, holds data
        assert flags_over(extents, *ZEROED) == {3}  # write -z: HOLE|ZERO, like never written
        assert flags_over(extents, 0, 1 * MiB) == {3}

        allocated = client.allocated_extents()
        clusters = {o // CLUSTER for o, n in DATA for o in range(o, o + n, CLUSTER)}
        for offset, length in allocated:  # nothing outside the written clusters...
            assert {o // CLUSTER for o in range(offset, offset + length)} <= clusters
            # ...and nothing that reads as zero (qcow2 COW padding shows as ZERO without HOLE).
            assert not any(f & 2 for f in flags_over(extents, offset, length))
        # The backup property: copying only allocated extents onto zeros rebuilds the disk.
        rebuilt = bytearray(SIZE)
        for offset, data in client.read_many(allocated):
            rebuilt[offset : offset + len(data)] = data
        assert rebuilt == reference

        # A sub-range is clipped to what was asked for.
        part = client.block_status("base:allocation", 1 * MiB + 4 * KiB, 8 * KiB)
        assert part == [(1 * MiB + 4 * KiB, 8 * KiB, 0)]


@pytest.mark.parametrize("depth", [1, 8, 32])
def test_read_many_returns_request_order(
    layout_image: Path,
    nbd_server: Start,  # noqa: F811
    depth: int,
) -> None:
    reference = raw_content(layout_image)
    rng = random.Random(depth)
    ranges = [
        (rng.randrange(SIZE // 512 - 200) * 512, rng.randrange(1, 200) * 512) for _ in range(300)
    ]
    ranges += [(0, 0), (SIZE - 512, 512), (1 * MiB, 64 * KiB), (1 * MiB, 64 * KiB)]
    rng.shuffle(ranges)
    with connect(nbd_server(layout_image, "disk")) as client:
        got = list(client.read_many(iter(ranges), depth=depth))  # a one-shot iterator
    assert [offset for offset, _ in got] == [offset for offset, _ in ranges]
    for (offset, length), (_, data) in zip(ranges, got, strict=True):
        assert data == reference[offset : offset + length]


def test_allocated_extents_skip_zero_flag_without_hole(
    tmp_path: Path,
    nbd_server: Start,  # noqa: F811
) -> None:
    # preallocation=metadata: every cluster is allocated (no HOLE) but reads as zero (ZERO).
    image = tmp_path / "prealloc.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", image, "8M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 64k", image)
    with connect(nbd_server(image, "disk"), "base:allocation") as client:
        assert flags_over(client.block_status("base:allocation"), 0, 1 * MiB) == {2}
        assert client.allocated_extents() == [(1 * MiB, 64 * KiB)]


def test_block_status_loops_past_the_32_bit_request_limit(
    tmp_path: Path,
    nbd_server: Start,  # noqa: F811
) -> None:
    size, data_at = 5 << 30, 9 << 29  # 5 GiB sparse; data at 4.5 GiB
    image = make_image(tmp_path / "huge.qcow2", size, [f"write -P 0x77 {data_at} 64k"])
    with connect(nbd_server(image, "huge"), "base:allocation") as client:
        assert client.block_status("base:allocation") == [
            (0, data_at, 3),  # one extent although it took several requests to describe
            (data_at, 64 * KiB, 0),
            (data_at + 64 * KiB, size - data_at - 64 * KiB, 3),
        ]
        assert client.allocated_extents() == [(data_at, 64 * KiB)]


def test_abandoned_read_many_leaves_connection_usable(
    layout_image: Path,
    nbd_server: Start,  # noqa: F811
) -> None:
    reference = raw_content(layout_image)
    with connect(nbd_server(layout_image, "disk")) as client:
        results = client.read_many(((o, 64 * KiB) for o in range(0, SIZE, 64 * KiB)), depth=16)
        assert next(results)[0] == 0
        results.close()  # 15 replies still in flight: the next call consumes them
        assert client.read(*DATA[0]) == reference[DATA[0][0] : sum(DATA[0])]
        with pytest.raises(ValueError, match="outside"):
            list(client.read_many([(0, 64 * KiB), (SIZE - 512, 1024)]))
        assert client.read(0, 512) == bytes(512)


def test_dirty_bitmap_tracks_writes_after_it_was_added(tmp_path: Path, nbd_server: Start) -> None:  # noqa: F811
    image = make_image(tmp_path / "disk.qcow2", SIZE, ["write -P 0x11 0 64k"])
    run("qemu-img", "bitmap", "--add", "--enable", image, "b0")
    writes = [(200 * KiB, 100 * KiB), (2 * MiB, 64 * KiB), (6 * MiB + 1000, 5000)]
    run(
        "qemu-io",
        "-f",
        "qcow2",
        *("-c", f"write -P 0x22 {writes[0][0]} {writes[0][1]}"),
        *("-c", f"write -z {writes[1][0]} {writes[1][1]}"),  # zero writes dirty too
        *("-c", f"write -P 0x33 {writes[2][0]} {writes[2][1]}"),
        image,
    )
    info = json.loads(run("qemu-img", "info", "--output=json", image))
    granularity = info["format-specific"]["data"]["bitmaps"][0]["granularity"]
    assert granularity == 64 * KiB
    starts_ends = [(o // granularity, -(-(o + n) // granularity)) for o, n in writes]
    expected = [(s * granularity, (e - s) * granularity) for s, e in starts_ends]
    server = nbd_server(image, "disk", extra=["--bitmap=b0"])
    bitmap = "qemu:dirty-bitmap:b0"
    with connect(server, "base:allocation", bitmap) as client:
        assert set(client.meta_contexts) == {"base:allocation", bitmap}
        assert len(set(client.meta_contexts.values())) == 2
        assert client.dirty_extents(bitmap) == expected
        # Written before the bitmap existed: allocated, but not dirty.
        assert client.allocated_extents(0, 64 * KiB) == [(0, 64 * KiB)]
        assert client.dirty_extents(bitmap, 256 * KiB, 2 * MiB) == [
            (256 * KiB, 64 * KiB),
            (2 * MiB, 64 * KiB),
        ]


def test_server_error_is_raised_and_connection_survives(
    layout_image: Path,
    nbd_server: Start,  # noqa: F811
) -> None:
    with connect(nbd_server(layout_image, "disk"), "base:allocation") as client:
        client.size += 1 * MiB  # as if the export had shrunk: QEMU answers with an error chunk
        with pytest.raises(NBDError, match="past EOF") as caught:
            client.read(SIZE, 4 * KiB)
        assert caught.value.error == "EINVAL"
        got = []
        with pytest.raises(NBDError, match="past EOF"):
            for offset, _ in client.read_many([(0, 4 * KiB), (SIZE, 4 * KiB), (4 * KiB, 4 * KiB)]):
                got.append(offset)
        assert got == [0]  # results before the failing range still arrive, in order
        with pytest.raises(NBDError, match=r"block status .* EINVAL"):
            client.block_status("base:allocation", SIZE, 4 * KiB)
        assert client.read(*DATA[0]) == b"\xab" * DATA[0][1]


def test_unknown_export_is_named(layout_image: Path, nbd_server: Start) -> None:  # noqa: F811
    server = nbd_server(layout_image, "disk")
    server.export = "no-such-disk"
    with pytest.raises(NBDError, match="no-such-disk") as caught:
        connect(server)
    assert caught.value.error == "NBD_REP_ERR_UNKNOWN"


def test_missing_meta_context_is_named(layout_image: Path, nbd_server: Start) -> None:  # noqa: F811
    server = nbd_server(layout_image, "disk")
    with pytest.raises(NBDError, match="'qemu:dirty-bitmap:nope'") as caught:
        connect(server, "base:allocation", "qemu:dirty-bitmap:nope")
    assert "offered: base:allocation" in str(caught.value)
    with connect(server) as client, pytest.raises(NBDError, match="not negotiated"):
        client.block_status("base:allocation")


def test_silent_server_times_out(silent_server: int) -> None:  # noqa: F811
    started = time.monotonic()
    with pytest.raises(NBDTimeoutError, match=r"did not answer within 0\.5 s"):
        NBDClient.connect_tcp("127.0.0.1", silent_server, "disk", timeout=0.5)
    assert time.monotonic() - started < 3


def test_connection_refused(tmp_path: Path) -> None:
    with pytest.raises(NBDError, match=r"[Rr]efused"):
        NBDClient.connect_tcp("127.0.0.1", free_port(), "disk", timeout=5)
    with pytest.raises(NBDError, match="No such file"):
        NBDClient.connect_unix(tmp_path / "missing.sock", "disk", timeout=5)


def tls_server(start: Start, image: Path, tls: Path) -> NBDServer:
    creds = f"tls-creds-x509,id=tls0,endpoint=server,dir={tls},verify-peer=off"
    return start(image, "disk", extra=["--object", creds, "--tls-creds=tls0"], tcp=True)


def test_tls_reads(layout_image: Path, nbd_server: Start, tls_dir: Path) -> None:  # noqa: F811
    server = tls_server(nbd_server, layout_image, tls_dir)
    assert server.port is not None
    context = ssl.create_default_context(cafile=str(tls_dir / "ca-cert.pem"))
    with NBDClient.connect_tcp(
        "127.0.0.1", server.port, "disk", tls_context=context, meta_contexts=["base:allocation"]
    ) as client:
        assert client.read(0, SIZE) == raw_content(layout_image)
        assert client.allocated_extents()


def test_tls_required_and_verified(layout_image: Path, nbd_server: Start, tls_dir: Path) -> None:  # noqa: F811
    server = tls_server(nbd_server, layout_image, tls_dir)
    assert server.port is not None
    with pytest.raises(NBDError, match="requires TLS") as caught:
        NBDClient.connect_tcp("127.0.0.1", server.port, "disk")
    assert caught.value.error == "NBD_REP_ERR_TLS_REQD"
    untrusting = ssl.create_default_context()  # system CAs do not know the test CA
    with pytest.raises(NBDError, match=r"TLS handshake .* failed"):
        NBDClient.connect_tcp("127.0.0.1", server.port, "disk", tls_context=untrusting)


def test_tls_refused_by_plain_server(layout_image: Path, nbd_server: Start, tls_dir: Path) -> None:  # noqa: F811
    server = nbd_server(layout_image, "disk", tcp=True)
    assert server.port is not None
    context = ssl.create_default_context(cafile=str(tls_dir / "ca-cert.pem"))
    with pytest.raises(NBDError, match="refused TLS"):
        NBDClient.connect_tcp("127.0.0.1", server.port, "disk", tls_context=context)
    with NBDClient.connect_tcp("127.0.0.1", server.port, "disk") as client:  # plain still works
        assert client.read(*DATA[0]) == b"\xab" * DATA[0][1]
