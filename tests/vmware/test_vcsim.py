"""The simulator's backup extensions, driven through pyvmomi as a backup product drives vSphere:
CBT changeIds and QueryChangedDiskAreas, frozen snapshot data, Range reads through /folder and
export leases, RDM/independent disks, HotAdd and consolidation."""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from pyVmomi import vim, vmodl

from tests.vmware.conftest import DISK_SIZE, MiB, Vcsim, wait_task

BLOCK = 64 * 1024
CHANGE_ID = re.compile(r"^52( [0-9a-f]{2}){7}-[0-9a-f]{2}( [0-9a-f]{2}){7}/\d+$")


def set_cbt(vcsim: Vcsim, vm: Any, enabled: bool) -> None:
    wait_task(vcsim.si, vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=enabled)))


def snapshot(vcsim: Vcsim, vm: Any, name: str) -> Any:
    return wait_task(vcsim.si, vm.CreateSnapshot_Task(name=name, memory=False, quiesce=False))


def snapshot_disks(snap: Any) -> list[Any]:
    return [d for d in snap.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


def changed_areas(
    vm: Any, snap: Any, key: int, change_id: str
) -> tuple[list[tuple[int, int]], int]:
    """All areas QueryChangedDiskAreas reports, paging with startOffset as a backup must; also
    returns how many calls it took."""
    capacity = next(d for d in snapshot_disks(snap) if d.key == key).capacityInKB * 1024
    areas: list[tuple[int, int]] = []
    offset, calls = 0, 0
    while offset < capacity:
        info = vm.QueryChangedDiskAreas(
            snapshot=snap, deviceKey=key, startOffset=offset, changeId=change_id
        )
        calls += 1
        assert info.startOffset == offset and info.length > 0
        for area in info.changedArea:
            assert offset <= area.start and area.start + area.length <= offset + info.length
            areas.append((area.start, area.length))
        offset = info.startOffset + info.length
    return merge(areas), calls


def merge(areas: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, length in sorted(areas):
        if merged and merged[-1][0] + merged[-1][1] == start:
            merged[-1] = (merged[-1][0], merged[-1][1] + length)
        else:
            merged.append((start, length))
    return merged


def blocks_to_areas(blocks: set[int], capacity: int) -> list[tuple[int, int]]:
    return merge([(b * BLOCK, min(BLOCK, capacity - b * BLOCK)) for b in blocks])


def nonzero_blocks(data: bytes) -> set[int]:
    zero = bytes(BLOCK)
    return {
        i // BLOCK
        for i in range(0, len(data), BLOCK)
        if data[i : i + BLOCK] != zero[: len(data[i : i + BLOCK])]
    }


def remove_snapshot(vcsim: Vcsim, snap: Any) -> None:
    wait_task(vcsim.si, snap.RemoveSnapshot_Task(removeChildren=False))


@pytest.fixture
def fresh_vm(vcsim: Vcsim, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A new source VM (one filled 64 MiB disk) for a test that changes CBT or snapshots."""
    vm = vcsim.create_vm(f"t-{request.node.name[:40]}")
    yield vm
    wait_task(vcsim.si, vm.PowerOffVM_Task())
    wait_task(vcsim.si, vm.Destroy_Task())


def test_fixture_inventory_and_certificate(vcsim: Vcsim) -> None:
    for name in vcsim.vms:
        disks = vcsim.disks(name)
        assert disks and all(d.capacityInKB * 1024 == DISK_SIZE for d in disks)
        assert vcsim.disk_path(name).stat().st_size == DISK_SIZE
        assert vcsim.find_vm(name).runtime.powerState == "poweredOn"
    assert vcsim.sha256_of_disk("src-vm-1") != vcsim.sha256_of_disk("src-vm-2")
    assert len(vcsim.disks("src-vm-2")) == 2
    hosts = {n: vcsim.find_vm(n).runtime.host.name for n in (*vcsim.vms, vcsim.proxy_vm)}
    assert set(hosts.values()) == {vcsim.host_name}
    assert vcsim.find_vm(vcsim.remote_proxy_vm).runtime.host.name != vcsim.host_name

    # The fingerprint the fixture reports is the certificate the server presents.
    context = ssl.create_default_context(cafile=str(vcsim.cert_file))
    with (
        socket.create_connection((vcsim.host, vcsim.port)) as raw,
        context.wrap_socket(raw, server_hostname=vcsim.host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    assert hashlib.sha256(der).hexdigest().upper() == vcsim.thumbprint.replace(":", "")
    assert hashlib.sha1(
        der, usedforsecurity=False
    ).hexdigest().upper() == vcsim.thumbprint_sha1.replace(":", "")

    from pyVim.connect import SmartConnect

    with pytest.raises(vim.fault.InvalidLogin):
        SmartConnect(
            host=vcsim.host, port=vcsim.port, user=vcsim.user, pwd="wrong", sslContext=context
        )


def test_cbt_full_then_incremental(vcsim: Vcsim, fresh_vm: Any) -> None:
    key = vcsim.disks(fresh_vm.name)[0].key
    set_cbt(vcsim, fresh_vm, True)
    assert fresh_vm.config.changeTrackingEnabled is True

    snap1 = snapshot(vcsim, fresh_vm, "full")
    change1 = snapshot_disks(snap1)[0].backing.changeId
    assert CHANGE_ID.match(change1), change1
    # '*' = the allocated (written) areas only, paged in several calls.
    written = nonzero_blocks(vcsim.disk_path(fresh_vm.name).read_bytes())
    areas, calls = changed_areas(fresh_vm, snap1, key, "*")
    assert areas == blocks_to_areas(written, DISK_SIZE)
    assert calls > 1
    remove_snapshot(vcsim, snap1)

    # Change 3 places: inside one block, across a block boundary, and a block that was empty.
    vcsim.write_disk(fresh_vm.name, 3 * BLOCK + 100, b"x" * 10)
    vcsim.write_disk(fresh_vm.name, 20 * BLOCK - 5, b"y" * 10)
    vcsim.write_disk(fresh_vm.name, 60 * MiB, b"z")
    snap2 = snapshot(vcsim, fresh_vm, "incremental")
    change2 = snapshot_disks(snap2)[0].backing.changeId
    assert CHANGE_ID.match(change2) and change2 != change1
    assert change2.split("/")[0] == change1.split("/")[0]  # same CBT epoch

    changed, _ = changed_areas(fresh_vm, snap2, key, change1)
    assert changed == blocks_to_areas({3, 19, 20, 60 * MiB // BLOCK}, DISK_SIZE)
    # Nothing changed since the snapshot itself.
    assert changed_areas(fresh_vm, snap2, key, change2)[0] == []
    remove_snapshot(vcsim, snap2)


def test_qcda_pages_from_unaligned_offset(vcsim: Vcsim, fresh_vm: Any) -> None:
    key = vcsim.disks(fresh_vm.name)[0].key
    set_cbt(vcsim, fresh_vm, True)
    snap = snapshot(vcsim, fresh_vm, "s")
    # 40 MiB + 12345 holds written data; start in the middle of it.
    start = 40 * MiB + 20000
    info = fresh_vm.QueryChangedDiskAreas(
        snapshot=snap, deviceKey=key, startOffset=start, changeId="*"
    )
    assert info.startOffset == start and 0 < info.length <= DISK_SIZE - start
    assert info.changedArea[0].start == start
    with pytest.raises(vmodl.fault.InvalidArgument):
        fresh_vm.QueryChangedDiskAreas(
            snapshot=snap, deviceKey=key, startOffset=DISK_SIZE, changeId="*"
        )
    remove_snapshot(vcsim, snap)


def test_change_ids_rejected_like_esxi(vcsim: Vcsim, fresh_vm: Any) -> None:
    key = vcsim.disks(fresh_vm.name)[0].key

    # CBT off when the snapshot was taken: no changeId, and QCDA fails with FileFault.
    snap0 = snapshot(vcsim, fresh_vm, "no-cbt")
    assert not snapshot_disks(snap0)[0].backing.changeId
    with pytest.raises(vim.fault.FileFault):
        fresh_vm.QueryChangedDiskAreas(snapshot=snap0, deviceKey=key, startOffset=0, changeId="*")
    remove_snapshot(vcsim, snap0)

    set_cbt(vcsim, fresh_vm, True)
    snap1 = snapshot(vcsim, fresh_vm, "one")
    old = snapshot_disks(snap1)[0].backing.changeId
    remove_snapshot(vcsim, snap1)
    foreign = "52 00 11 22 33 44 55 66-77 88 99 aa bb cc dd ee/7"
    for bad in (foreign, "garbage", old.replace("/", "/9")):
        snap = snapshot(vcsim, fresh_vm, "probe")
        with pytest.raises(vmodl.fault.InvalidArgument) as fault:
            fresh_vm.QueryChangedDiskAreas(
                snapshot=snap, deviceKey=key, startOffset=0, changeId=bad
            )
        assert fault.value.invalidProperty == "changeId"
        remove_snapshot(vcsim, snap)

    # A CBT reset (off, on) invalidates every earlier changeId.
    set_cbt(vcsim, fresh_vm, False)
    set_cbt(vcsim, fresh_vm, True)
    snap2 = snapshot(vcsim, fresh_vm, "after-reset")
    assert snapshot_disks(snap2)[0].backing.changeId.split("/")[0] != old.split("/")[0]
    with pytest.raises(vmodl.fault.InvalidArgument):
        fresh_vm.QueryChangedDiskAreas(snapshot=snap2, deviceKey=key, startOffset=0, changeId=old)
    assert changed_areas(fresh_vm, snap2, key, "*")[0]  # a full read still works
    remove_snapshot(vcsim, snap2)


def test_snapshot_data_stays_frozen_and_reads_over_http(vcsim: Vcsim, fresh_vm: Any) -> None:
    before = vcsim.disk_path(fresh_vm.name).read_bytes()
    snap = snapshot(vcsim, fresh_vm, "frozen")
    snap_disk = snapshot_disks(snap)[0]
    assert snap_disk.backing.fileName != vcsim.disks(fresh_vm.name)[0].backing.fileName

    vcsim.write_disk(fresh_vm.name, 0, b"\xff" * MiB)  # the VM keeps writing
    assert vcsim.read_disk(fresh_vm.name, 0, 4) == b"\xff" * 4
    assert vcsim.local_path(snap_disk.backing.fileName).read_bytes() == before

    http = vcsim.http()
    flat = snap_disk.backing.fileName.replace(".vmdk", "-flat.vmdk")
    ranged = http.get(vcsim.folder_url(flat), headers={"Range": "bytes=65536-131071"})
    assert ranged.status_code == 206 and ranged.content == before[65536:131072]
    assert vcsim.http().get(vcsim.folder_url(flat), headers={"Cookie": ""}).status_code == 401

    lease = snap.ExportSnapshot()
    assert lease.state == "ready"
    urls = lease.info.deviceUrl
    assert len(urls) == 1 and urls[0].disk and urls[0].url.startswith("https://*/nfc/")
    assert urls[0].key.startswith(f"/{fresh_vm._moId}/VirtualLsiLogicController0:")
    url = urls[0].url.replace("*", f"{vcsim.host}:{vcsim.port}")
    ranged = http.get(url, headers={"Range": f"bytes={MiB - 10}-{MiB + 9}"})
    assert ranged.status_code == 206 and ranged.content == before[MiB - 10 : MiB + 10]
    whole = http.get(url)
    assert hashlib.sha256(whole.content).digest() == hashlib.sha256(before).digest()
    lease.HttpNfcLeaseProgress(percent=100)
    lease.HttpNfcLeaseComplete()
    assert http.get(url).status_code == 404

    remove_snapshot(vcsim, snap)
    assert not vcsim.local_path(snap_disk.backing.fileName).exists()


def test_revert_restores_snapshot_data(vcsim: Vcsim, fresh_vm: Any) -> None:
    before = vcsim.sha256_of_disk(fresh_vm.name)
    snap = snapshot(vcsim, fresh_vm, "revert")
    vcsim.write_disk(fresh_vm.name, 5 * MiB, b"changed")
    assert vcsim.sha256_of_disk(fresh_vm.name) != before
    wait_task(vcsim.si, snap.RevertToSnapshot_Task())
    assert vcsim.sha256_of_disk(fresh_vm.name) == before
    remove_snapshot(vcsim, snap)


def test_export_vm_needs_powered_off_vm(vcsim: Vcsim, fresh_vm: Any) -> None:
    with pytest.raises(vim.fault.InvalidPowerState):
        fresh_vm.ExportVm()
    wait_task(vcsim.si, fresh_vm.PowerOffVM_Task())
    lease = fresh_vm.ExportVm()
    url = lease.info.deviceUrl[0].url.replace("*", f"{vcsim.host}:{vcsim.port}")
    got = vcsim.http().get(url, headers={"Range": "bytes=0-1023"})
    assert got.status_code == 206 and got.content == vcsim.read_disk(fresh_vm.name, 0, 1024)
    lease.HttpNfcLeaseComplete()
    wait_task(vcsim.si, fresh_vm.PowerOnVM_Task())


def test_rdm_and_independent_disks_are_not_snapshotted(vcsim: Vcsim) -> None:
    vm = vcsim.find_vm(vcsim.rdm_vm)
    normal, rdm, independent = vcsim.disks(vcsim.rdm_vm)
    assert isinstance(rdm.backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo)
    assert rdm.backing.compatibilityMode == "physicalMode" and (
        rdm.backing.deviceName or ""
    ).startswith("/vmfs/devices/")
    assert independent.backing.diskMode == "independent_persistent"

    set_cbt(vcsim, vm, True)  # a reconfigure of a VM holding an RDM works
    snap = snapshot(vcsim, vm, "rdm")
    by_key = {d.key: d for d in snapshot_disks(snap)}
    assert CHANGE_ID.match(by_key[normal.key].backing.changeId)
    assert isinstance(
        by_key[rdm.key].backing, vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo
    )
    assert not by_key[rdm.key].backing.changeId and not by_key[independent.key].backing.changeId
    for key in (rdm.key, independent.key):
        with pytest.raises(vim.fault.FileFault):
            vm.QueryChangedDiskAreas(snapshot=snap, deviceKey=key, startOffset=0, changeId="*")
    assert len(snap.ExportSnapshot().info.deviceUrl) == 1  # only the normal disk
    remove_snapshot(vcsim, snap)
    set_cbt(vcsim, vm, False)
    assert isinstance(
        vcsim.disks(vcsim.rdm_vm)[1].backing,
        vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo,
    )


def hot_add(vcsim: Vcsim, proxy: Any, ds_path: str, capacity: int, unit: int) -> Any:
    controller = next(
        d
        for d in proxy.config.hardware.device
        if isinstance(d, vim.vm.device.VirtualSCSIController)
    )
    disk = vim.vm.device.VirtualDisk(
        key=-1,
        controllerKey=controller.key,
        unitNumber=unit,
        capacityInKB=capacity // 1024,
        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=ds_path, diskMode="independent_nonpersistent"
        ),
    )
    change = vim.vm.device.VirtualDeviceSpec(
        operation="add", device=disk
    )  # no fileOperation: existing file
    wait_task(vcsim.si, proxy.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))
    return next(d for d in vcsim.disks(proxy.name) if d.backing.fileName == ds_path)


def hot_remove(vcsim: Vcsim, proxy: Any, disk: Any) -> None:
    change = vim.vm.device.VirtualDeviceSpec(operation="remove", device=disk)  # keep the file
    wait_task(vcsim.si, proxy.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))


def test_hotadd_snapshot_disk_to_proxy(vcsim: Vcsim, fresh_vm: Any) -> None:
    proxy = vcsim.find_vm(vcsim.proxy_vm)
    expected = vcsim.sha256_of_disk(fresh_vm.name)
    snap = snapshot(vcsim, fresh_vm, "hotadd")
    ds_path = snapshot_disks(snap)[0].backing.fileName
    vcsim.write_disk(fresh_vm.name, 0, b"after")

    attached = hot_add(vcsim, proxy, ds_path, DISK_SIZE, unit=1)
    # The proxy reads the attached disk through the datastore's local directory.
    assert (
        hashlib.sha256(vcsim.local_path(attached.backing.fileName).read_bytes()).hexdigest()
        == expected
    )
    hot_remove(vcsim, proxy, attached)
    assert all(d.backing.fileName != ds_path for d in vcsim.disks(proxy.name))
    assert vcsim.local_path(ds_path).exists()
    remove_snapshot(vcsim, snap)
    assert not vcsim.local_path(ds_path).exists()


def test_snapshot_removed_while_hot_added_needs_consolidation(vcsim: Vcsim, fresh_vm: Any) -> None:
    proxy = vcsim.find_vm(vcsim.proxy_vm)
    snap = snapshot(vcsim, fresh_vm, "crashed-proxy")
    ds_path = snapshot_disks(snap)[0].backing.fileName
    attached = hot_add(vcsim, proxy, ds_path, DISK_SIZE, unit=2)

    remove_snapshot(vcsim, snap)  # as a snapshot hunter would, while the proxy still holds the disk
    assert fresh_vm.runtime.consolidationNeeded is True
    assert vcsim.local_path(ds_path).exists()
    with pytest.raises(vim.fault.FileLocked):
        wait_task(vcsim.si, fresh_vm.ConsolidateVMDisks_Task())

    hot_remove(vcsim, proxy, attached)
    wait_task(vcsim.si, fresh_vm.ConsolidateVMDisks_Task())
    assert fresh_vm.runtime.consolidationNeeded is False
    assert not vcsim.local_path(ds_path).exists()


def test_removing_a_snapshot_tree_deletes_its_copies(vcsim: Vcsim, fresh_vm: Any) -> None:
    parent = snapshot(vcsim, fresh_vm, "parent")
    child = snapshot(vcsim, fresh_vm, "child")
    files = [vcsim.local_path(snapshot_disks(s)[0].backing.fileName) for s in (parent, child)]
    assert files[0] != files[1] and all(f.exists() for f in files)
    wait_task(vcsim.si, parent.RemoveSnapshot_Task(removeChildren=True))
    assert not any(f.exists() for f in files)
