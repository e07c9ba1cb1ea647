"""Verify restore points: fast (manifest, indexes, chunk presence) or deep (every chunk read,
decrypted and re-hashed). Problems are reported as disk ranges, so a user knows what is lost."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from storage.engine.backend import BackendError
from storage.engine.envelope import CorruptObject
from storage.engine.extents import Range, normalize
from storage.engine.index import ZERO_DIGEST, IndexError_
from storage.engine.repository import Repository

_UNREADABLE = (BackendError, CorruptObject, IndexError_, ValueError, KeyError)


@dataclass
class DiskProblem:
    device_key: str
    ranges: list[Range]
    reasons: list[str]


@dataclass
class VerifyResult:
    key: str
    problems: list[DiskProblem] = field(default_factory=list)
    manifest_error: str = ""
    chunks_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.manifest_error


class ChunkChecker:
    """Checks each distinct chunk once, however many points share it."""

    def __init__(self, repo: Repository, *, deep: bool) -> None:
        self.repo, self.deep = repo, deep
        self._verdicts: dict[bytes, str] = {}

    def problem(self, digest: bytes) -> str:
        """ "" when the chunk is fine, else why not."""
        if digest not in self._verdicts:
            self._verdicts[digest] = self._check(digest)
        return self._verdicts[digest]

    def _check(self, digest: bytes) -> str:
        try:
            if self.deep:
                self.repo.get_chunk(digest)
            elif not self.repo.backend.exists(self.repo.chunk_key(digest)):
                return f"chunk {digest.hex()[:16]}… is missing"
        except CorruptObject as exc:
            return f"chunk {digest.hex()[:16]}… is corrupt: {exc}"
        except BackendError as exc:
            return f"chunk {digest.hex()[:16]}… cannot be read: {exc}"
        return ""

    @property
    def checked(self) -> int:
        return len(self._verdicts)


def verify_point(
    repo: Repository,
    key: str,
    checker: ChunkChecker,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyResult:
    result = VerifyResult(key)
    try:
        manifest = repo.read_manifest(key)
    except _UNREADABLE as exc:
        result.manifest_error = f"manifest cannot be read: {exc}"
        return result
    total = sum(d.size for d in manifest.disks)
    done = 0
    for disk in manifest.disks:
        bad: list[Range] = []
        reasons: list[str] = []
        try:
            index = repo.disk_index(disk.index)
        except _UNREADABLE as exc:
            result.problems.append(DiskProblem(disk.device_key, [(0, disk.size)], [str(exc)]))
            continue
        for number, page_digest in enumerate(index.pages):
            if page_digest == ZERO_DIGEST:
                continue
            try:
                entries = repo.page(page_digest)
            except _UNREADABLE as exc:
                bad.append(index.page_range(number))
                reasons.append(f"index page {number} cannot be read: {exc}")
                continue
            for entry in entries:
                why = checker.problem(entry.digest)
                if why:
                    bad.append((entry.offset, entry.end))
                    if why not in reasons:
                        reasons.append(why)
            if progress:
                done += index.page_range(number)[1] - index.page_range(number)[0]
                progress(done, total)
        if bad:
            result.problems.append(DiskProblem(disk.device_key, normalize(bad), reasons))
    result.chunks_checked = checker.checked
    return result


def verify_repository(
    repo: Repository, *, deep: bool, vm_key: str | None = None
) -> list[VerifyResult]:
    checker = ChunkChecker(repo, deep=deep)
    return [verify_point(repo, key, checker) for key in repo.manifest_keys(vm_key)]
