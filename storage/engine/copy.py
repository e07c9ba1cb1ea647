"""Secondary copies (AuxCopy): restore points copied to another repository, which may have
other keys. Only chunks the target lacks are transferred; an interrupted copy resumes, because
chunks already in the target are found there and the manifest is written last."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from storage.engine.envelope import KIND_CHUNK, KIND_INDEX
from storage.engine.index import ZERO_DIGEST, DiskIndex, Entry, encode_page
from storage.engine.manifest import DiskRecord, Manifest, Stats
from storage.engine.repository import Repository


@dataclass
class CopyResult:
    copied: bool
    chunks_sent: int = 0
    chunks_present: int = 0
    bytes_sent: int = 0


def copy_point(
    source: Repository,
    target: Repository,
    manifest: Manifest,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> CopyResult:
    if target.backend.exists(manifest.key):
        return CopyResult(copied=False)
    result = CopyResult(copied=True)
    renamed: dict[bytes, bytes] = {}  # source digest → target digest (keys differ per repo)
    records: list[DiskRecord] = []
    total = sum(d.size for d in manifest.disks)
    done = 0
    with target.writer_registration(None):
        for disk in manifest.disks:
            index = source.disk_index(disk.index)
            pages: list[bytes] = []
            for page in index.pages:
                if page == ZERO_DIGEST:
                    pages.append(ZERO_DIGEST)
                    continue
                entries: list[Entry] = []
                for entry in source.page(page):
                    if entry.digest not in renamed:
                        data = source.get_chunk(entry.digest)  # verified on the way
                        digest, sent = target.put_blob(KIND_CHUNK, data)
                        renamed[entry.digest] = digest
                        result.chunks_sent += 1 if sent else 0
                        result.chunks_present += 0 if sent else 1
                        result.bytes_sent += sent
                    entries.append(
                        Entry(entry.offset, entry.length, entry.chunk_offset, renamed[entry.digest])
                    )
                digest, sent = target.put_blob(KIND_INDEX, encode_page(entries))
                result.bytes_sent += sent
                pages.append(digest)
                done += index.span
                if progress:
                    progress(min(done, total), total)
            new_index = DiskIndex(index.size, index.span, tuple(pages))
            index_digest, sent = target.put_blob(KIND_INDEX, new_index.encode())
            result.bytes_sent += sent
            records.append(
                DiskRecord(**{**disk.__dict__, "index": index_digest.hex(), "stored_bytes": 0})
            )
            renamed.clear()  # per disk, so memory stays bounded by one disk's distinct chunks
        copy = Manifest(
            id=manifest.id,
            vm_key=manifest.vm_key,
            vm_name=manifest.vm_name,
            created=manifest.created,
            disks=records,
            consistency=manifest.consistency,
            vm_config=manifest.vm_config,
            parent=manifest.parent,
            immutable_until=target.retain_until(manifest.created),
            stats=Stats(
                logical_bytes=manifest.stats.logical_bytes,
                read_bytes=0,
                stored_bytes=result.bytes_sent,
                new_unique_bytes=result.bytes_sent,
            ),
        )
        target.backend.flush()
        target.write_manifest(copy)
    return result
