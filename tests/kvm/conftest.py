"""Fixtures for tests against a real libvirtd + QEMU (TCG, no KVM needed).

``libvirt_env`` starts a private libvirtd once per session (see inventory.kvm.libvirt_env);
``kvm_domain`` gives each test a running domain with two 64 MiB qcow2 disks on virtio-scsi.
Without QEMU/libvirt/libvirt-python (``.ci/kvm-packages`` installs them) the tests skip, except
under CI=true, where they fail: a CI run that silently skipped them would prove nothing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from inventory.kvm.libvirt_env import (
    LocalLibvirt,
    define_test_domain,
    disk_aliases,
    missing_requirements,
    remove_domain,
)
from tests.kvm.nbd_fixtures import tls_dir  # noqa: F401 - shared by the NBD and remote-host tests
from tests.unavailable import unavailable

if TYPE_CHECKING:
    import libvirt

DISK_SIZE = 64 * 1024 * 1024


def kvm_unavailable(reason: str) -> None:
    """Skip locally, fail under CI (where .ci/kvm-packages must have installed everything)."""
    unavailable(f"{reason} (run .ci/kvm-packages as root)")


@pytest.fixture(scope="session")
def libvirt_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLibvirt]:
    missing = missing_requirements()
    if missing:
        kvm_unavailable("KVM test environment incomplete, missing: " + "; ".join(missing))
    with LocalLibvirt(tmp_path_factory.mktemp("libvirt")) as env:
        yield env


@pytest.fixture(scope="session")
def libvirt_conn(libvirt_env: LocalLibvirt) -> Iterator[libvirt.virConnect]:
    import libvirt

    # libvirt's default handler prints every error to stderr although the binding raises it as
    # libvirtError too; tests that expect an error would litter the output.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt_env.open()
    try:
        yield conn
    finally:
        conn.close()


@dataclass
class KvmDomain:
    domain: libvirt.virDomain
    disks: list[Path]  # qcow2 images, in target order (sda, sdb)
    aliases: list[str]  # device aliases for qemu-io -d, same order ("scsi0-0-0-0", ...)
    workdir: Path

    @property
    def name(self) -> str:
        return str(self.domain.name())


@pytest.fixture
def kvm_domain(
    libvirt_conn: libvirt.virConnect, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[KvmDomain]:
    """A running TCG domain (no OS) with two 64 MiB qcow2 disks in ``tmp_path``; destroyed and
    undefined afterwards together with any checkpoints the test made."""
    # Unique per test, so a leftover from an earlier failure can never collide.
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:40]
    name = f"bc-{slug}-{uuid.uuid4().hex[:8]}"
    disks = [tmp_path / "disk0.qcow2", tmp_path / "disk1.qcow2"]
    domain = define_test_domain(
        libvirt_conn, name, disks, tmp_path, disk_size=DISK_SIZE, start=False
    )
    try:
        domain.create()
        yield KvmDomain(domain=domain, disks=disks, aliases=disk_aliases(domain), workdir=tmp_path)
    finally:
        remove_domain(domain)


@pytest.fixture(scope="session")
def qemu_system() -> str:
    """Path of qemu-system-x86_64, for tests that run QEMU directly (QMP, no libvirt)."""
    import shutil

    path = shutil.which("qemu-system-x86_64")
    if path is None:
        kvm_unavailable("qemu-system-x86_64 is not installed")
    assert path is not None
    return path
