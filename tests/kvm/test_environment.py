"""Proves the real-hypervisor test environment: a private libvirtd runs TCG domains, guest writes
reach the disk images, pull-mode backups with checkpoints expose NBD exports, and the QMP client
drives a bare QEMU. Everything else under tests/kvm builds on these guarantees."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from inventory.kvm.libvirt_env import (
    LibvirtEnvError,
    LocalLibvirt,
    define_test_domain,
    guest_flush,
    guest_write,
    guest_write_zero,
    hmp,
    remove_domain,
)
from inventory.kvm.qmp import QMPClient, QMPError
from tests.kvm.conftest import DISK_SIZE, KvmDomain

KiB = 1024
MiB = 1024 * KiB


def qemu_img_raw(disk: Path, out: Path) -> bytes:
    """The disk's guest-visible content; -U because the running QEMU holds the image lock."""
    subprocess.run(
        ["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(disk), str(out)], check=True
    )
    return out.read_bytes()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def accepts_connections(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def test_domain_starts_and_runs(kvm_domain: KvmDomain) -> None:
    import libvirt

    state, _reason = kvm_domain.domain.state()
    assert state == libvirt.VIR_DOMAIN_RUNNING
    assert kvm_domain.aliases == ["scsi0-0-0-0", "scsi0-0-0-1"]
    for disk in kvm_domain.disks:
        info = subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", str(disk)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert '"format": "qcow2"' in info
        assert f'"virtual-size": {DISK_SIZE}' in info


def test_guest_write_reaches_the_disk(kvm_domain: KvmDomain, tmp_path: Path) -> None:
    sda, sdb = kvm_domain.aliases
    guest_write(kvm_domain.domain, sda, 1 * MiB, 64 * KiB, 0xAB)
    guest_write(kvm_domain.domain, sda, 3 * MiB + 512, 4 * KiB, 0x5C)  # unaligned is fine
    guest_write(kvm_domain.domain, sdb, 0, 64 * KiB, 0x11)
    guest_write_zero(kvm_domain.domain, sdb, 0, 4 * KiB)
    guest_flush(kvm_domain.domain, sda)
    guest_flush(kvm_domain.domain, sdb)

    data = qemu_img_raw(kvm_domain.disks[0], tmp_path / "sda.raw")
    assert len(data) == DISK_SIZE
    assert data[1 * MiB : 1 * MiB + 64 * KiB] == b"\xab" * (64 * KiB)
    assert data[3 * MiB + 512 : 3 * MiB + 512 + 4 * KiB] == b"\x5c" * (4 * KiB)
    assert data.count(0) == DISK_SIZE - 68 * KiB  # nothing else was touched

    other = qemu_img_raw(kvm_domain.disks[1], tmp_path / "sdb.raw")
    assert other[: 4 * KiB] == bytes(4 * KiB)
    assert other[4 * KiB : 64 * KiB] == b"\x11" * (60 * KiB)


def test_monitor_errors_raise(kvm_domain: KvmDomain) -> None:
    with pytest.raises(LibvirtEnvError, match="not found"):
        guest_write(kvm_domain.domain, "no-such-device", 0, 512, 0x01)
    # HMP reports errors as text: the helpers turn any output into an exception.
    assert "not found" in hmp(kvm_domain.domain, 'qemu-io -d no-such-device "flush"')
    with pytest.raises(LibvirtEnvError, match="Device 'no-such-device' not found"):
        guest_flush(kvm_domain.domain, "no-such-device")
    # qemu-io reports failed I/O only in the domain log, so ranges are checked up front.
    with pytest.raises(ValueError, match="outside the disk"):
        guest_write(kvm_domain.domain, kvm_domain.aliases[0], DISK_SIZE - 512, 1024, 0x01)


def pull_backup(kvm_domain: KvmDomain, sock: Path, checkpoint: str) -> None:
    """Start a pull-mode backup of sda (sdb excluded) that also creates ``checkpoint``."""
    scratch = kvm_domain.workdir / "scratch-sda.qcow2"
    backup_xml = f"""
<domainbackup mode='pull'>
  <server transport='unix' socket='{sock}'/>
  <disks>
    <disk name='sda' backup='yes' type='file'><scratch file='{scratch}'/></disk>
    <disk name='sdb' backup='no'/>
  </disks>
</domainbackup>"""
    checkpoint_xml = f"""
<domaincheckpoint>
  <name>{checkpoint}</name>
  <disks><disk name='sda' checkpoint='bitmap'/><disk name='sdb' checkpoint='no'/></disks>
</domaincheckpoint>"""
    kvm_domain.domain.backupBegin(backup_xml, checkpoint_xml)


def test_pull_backup_exposes_nbd_and_creates_checkpoint(
    kvm_domain: KvmDomain, tmp_path: Path
) -> None:
    import libvirt

    domain = kvm_domain.domain
    sock = tmp_path / "nbd.sock"
    pull_backup(kvm_domain, sock, "cp1")

    assert wait_for(lambda: accepts_connections(sock)), "NBD socket never appeared"
    assert domain.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE
    assert [cp.getName() for cp in domain.listAllCheckpoints()] == ["cp1"]
    # libvirt never hands out the backup XML it was given; the job's stats name the operation.
    stats = domain.jobStats()
    assert stats.get("operation") == libvirt.VIR_DOMAIN_JOB_OPERATION_BACKUP

    domain.abortJob()
    assert wait_for(lambda: domain.jobInfo()[0] == libvirt.VIR_DOMAIN_JOB_NONE)
    assert not accepts_connections(sock)
    # Aborting the backup keeps the checkpoint: its bitmap tracks writes from backupBegin on.
    assert [cp.getName() for cp in domain.listAllCheckpoints()] == ["cp1"]


def test_pull_backup_reads_through_nbd_client(kvm_domain: KvmDomain, tmp_path: Path) -> None:
    """Cross-check with the project's own NBD client (inventory/kvm/nbd.py)."""
    nbd = pytest.importorskip("inventory.kvm.nbd")

    domain = kvm_domain.domain
    sda = kvm_domain.aliases[0]
    guest_write(domain, sda, 2 * MiB, 64 * KiB, 0xC3)
    sock = tmp_path / "nbd.sock"
    pull_backup(kvm_domain, sock, "cp1")
    try:
        assert wait_for(lambda: accepts_connections(sock))
        # Written after the backup point: must not show up in the export.
        guest_write(domain, sda, 2 * MiB, 4 * KiB, 0x99)
        with nbd.NBDClient.connect_unix(sock, "sda") as client:
            assert client.size == DISK_SIZE
            assert client.read(2 * MiB, 64 * KiB) == b"\xc3" * (64 * KiB)
            assert client.read(0, 64 * KiB) == bytes(64 * KiB)
    finally:
        domain.abortJob()


def test_local_libvirt_restarts_and_leaves_nothing(
    tmp_path: Path, libvirt_env: LocalLibvirt
) -> None:
    """A second private daemon beside the session's, stopped with a domain still running, then
    started again in the same directory: what consecutive test sessions do."""
    env = LocalLibvirt(tmp_path / "lv", cache_dir=libvirt_env.cache_dir)
    for _ in range(2):
        started = time.monotonic()
        env.start()
        assert time.monotonic() - started < 5
        conn = env.open()
        try:
            # A fresh start forgets what the previous one defined.
            assert conn.listAllDomains() == []
            domain = define_test_domain(conn, "restart-probe", [Path("d.qcow2")], tmp_path)
            assert domain.isActive()
            init = env._proc
            assert init is not None
        finally:
            conn.close()
        env.stop()  # with the domain still running: the PID namespace takes QEMU down too
        assert init.returncode is not None
        assert not env.socket_path.exists()
        assert not subprocess.run(
            ["pgrep", "-f", f"qemu-system-x86_64.*{tmp_path}/d.qcow2"], capture_output=True
        ).stdout
    env.stop()  # idempotent

    # The session's daemon was not disturbed.
    conn = libvirt_env.open()
    try:
        domain = define_test_domain(
            conn, "after-restart", [Path("e.qcow2")], tmp_path, disk_size=MiB
        )
        remove_domain(domain)
    finally:
        conn.close()


def test_qmp_client_drives_bare_qemu(qemu_system: str, tmp_path: Path) -> None:
    disk = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "8M"], check=True)
    qmp_sock = tmp_path / "qmp.sock"
    qemu = subprocess.Popen(
        [
            qemu_system,
            "-S",
            "-machine",
            "q35,accel=tcg",
            "-m",
            "128",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-qmp",
            f"unix:{qmp_sock},server=on,wait=off",
            "-blockdev",
            f"driver=file,filename={disk},node-name=file0",
            "-blockdev",
            "driver=qcow2,file=file0,node-name=disk0",
            "-device",
            "virtio-scsi-pci,id=scsi0",
            "-device",
            "scsi-hd,bus=scsi0.0,drive=disk0,id=sda",
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        with QMPClient(qmp_sock).connect(retry_for=10) as qmp:
            assert qmp.greeting["version"]["qemu"]["major"] >= 7
            assert qmp.execute("query-status")["status"] == "prelaunch"
            with pytest.raises(QMPError) as err:
                qmp.execute("no-such-command")
            assert err.value.error_class == "CommandNotFound"
            qmp.execute(
                "block-dirty-bitmap-add", {"node": "disk0", "name": "b0"}, granularity=65536
            )
            assert qmp.hmp('qemu-io -d sda "write -P 0x42 0 64k"') == ""
            bitmaps = {
                bitmap["name"]: bitmap["count"]
                for node in qmp.execute("query-named-block-nodes", flat=True)
                for bitmap in node.get("dirty-bitmaps", [])
            }
            assert bitmaps == {"b0": 65536}
            assert "Error" in qmp.hmp('qemu-io -d nope "flush"')
            qmp.execute("quit")
            assert qmp.wait_event("SHUTDOWN", timeout=10)["data"]["reason"] == "host-qmp-quit"
        assert qemu.wait(timeout=10) == 0
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
