"""Fixtures for tests against VMware's vSphere simulator (vcsim) with our backup extensions.

``vcsim`` (module scope) starts one simulator per test module, built by ``make vcsim`` from
``tests/vcsim`` (see its README), on 127.0.0.1 with a fresh 2048-bit certificate, and prepares
this inventory in datacenter DC0, datastore LocalDS_0 (a directory under the module's temp dir),
host DC0_C0_H0 of cluster DC0_C0, all VMs powered on, CBT off:

- ``vcsim.vms``: two backup sources, ``src-vm-1`` (one 64 MiB disk) and ``src-vm-2`` (two), with
  deterministic content written in a few places (the rest reads as zeros);
- ``vcsim.rdm_vm``: a 64 MiB disk with content, a physical-mode RDM and an independent
  (independent_persistent) 64 MiB disk with content, in that order;
- ``vcsim.proxy_vm``: a backup proxy VM (one small disk, free SCSI slots) for HotAdd, on the
  same host as the VMs above; ``vcsim.remote_proxy_vm`` the same on host DC0_C0_H1, where
  HotAdd of those VMs' disks is not possible (vSphere needs the proxy on the VM's host);
- the simulator's own VMs (DC0_C0_RP0_VM0/1, DC0_H0_VM0/1: 1 MiB empty disks).

Disk data lives in plain files: ``disk_path(vm, i)`` is the flat file of a VM's i-th disk,
``write_disk`` writes into it as the guest would, ``local_path("[LocalDS_0] a/b.vmdk")`` maps any
datastore path (a snapshot's disk, for instance) to the local data file.

Without Go and govmomi's sources (``.ci/vcsim-packages`` installs them) the tests skip, except
under CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import queue
import random
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.unavailable import unavailable

REPO = Path(__file__).resolve().parents[2]
BINARY = REPO / ".cache" / "vcsim" / "vcsim-ext"
GOVMOMI_SOURCES = Path("/usr/share/gocode/src/github.com/vmware/govmomi/simulator")

MiB = 1024 * 1024
DISK_SIZE = 64 * MiB
USER = "backup@vsphere.local"
PASSWORD = "vcsim-Secret-1"
DATACENTER = "DC0"
DATASTORE = "LocalDS_0"
HOST = "DC0_C0_H0"
OTHER_HOST = "DC0_C0_H1"

SOURCE_VMS = {"src-vm-1": 1, "src-vm-2": 2}  # name -> number of 64 MiB disks
RDM_VM = "rdm-vm"
PROXY_VM = "backup-proxy"
REMOTE_PROXY_VM = "backup-proxy-h1"
RDM_DEVICE = "/vmfs/devices/disks/naa.6000c2900000000000000000000000aa"


def build_vcsim() -> Path:
    """``make vcsim`` (a no-op when the binary is up to date), serialised between processes."""
    if not GOVMOMI_SOURCES.is_dir() or not _have("go"):
        unavailable(
            "vcsim needs golang-go and golang-github-vmware-govmomi-dev"
            " (run .ci/vcsim-packages as root)"
        )
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    with open(BINARY.parent / ".build-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run = subprocess.run(
            ["make", "--no-print-directory", "-s", "vcsim"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    if run.returncode != 0:
        pytest.fail(f"building vcsim failed:\n{run.stdout}\n{run.stderr}", pytrace=False)
    return BINARY


def _have(tool: str) -> bool:
    from shutil import which

    return which(tool) is not None


def wait_task(si: Any, task: Any, timeout: float = 60) -> Any:
    """Wait for a vSphere task and return its result, raising its fault.

    Reads only info.state/result/error through the PropertyCollector: pyVim's WaitForTask chokes
    on the simulator's Task.info.entity for snapshot and file tasks (see shared notes)."""
    from pyVmomi import vmodl

    pc = si.content.propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task)],
        propSet=[
            vmodl.query.PropertyCollector.PropertySpec(
                type=type(task), pathSet=["info.state", "info.result", "info.error"]
            )
        ],
    )
    deadline = time.monotonic() + timeout
    while True:
        props = {p.name: p.val for p in pc.RetrieveContents([spec])[0].propSet}
        state = props.get("info.state")
        if state == "success":
            return props.get("info.result")
        if state == "error":
            raise props["info.error"]
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task} still {state}")
        time.sleep(0.05)


@dataclass
class Vcsim:
    url: str  # https://127.0.0.1:<port>/sdk
    host: str
    port: int
    user: str
    password: str
    thumbprint: str  # SHA-256 of the server certificate, "AB:CD:..." (as vSphere shows it)
    thumbprint_sha1: str
    cert_file: Path  # the server certificate (PEM), to trust it instead of pinning
    datastore_dir: Path  # local directory of LocalDS_0
    datacenter: str = DATACENTER
    datastore: str = DATASTORE
    host_name: str = HOST
    vms: list[str] = field(default_factory=lambda: list(SOURCE_VMS))
    rdm_vm: str = RDM_VM
    proxy_vm: str = PROXY_VM
    remote_proxy_vm: str = REMOTE_PROXY_VM
    process: subprocess.Popen[bytes] | None = None
    _si: Any = None

    # -- connections -------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_file))

    def connect(self) -> Any:
        """A new pyvmomi ServiceInstance, certificate verified against the simulator's own."""
        from pyVim.connect import SmartConnect

        return SmartConnect(
            host=self.host,
            port=self.port,
            user=self.user,
            pwd=self.password,
            sslContext=self.ssl_context(),
        )

    @property
    def si(self) -> Any:
        """The fixture's own shared connection (tests may use it, or connect() their own)."""
        if self._si is None:
            self._si = self.connect()
        return self._si

    def http(self, si: Any | None = None) -> Any:
        """A requests.Session for /folder and export URLs, carrying the session cookie of si
        (the simulator, like vCenter, answers 401 on /folder without one)."""
        import requests

        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        session.verify = str(self.cert_file)
        cookie = (si or self.si)._stub.cookie
        session.headers["Cookie"] = cookie.split(";")[0]
        return session

    def folder_url(self, ds_path: str) -> str:
        """https://host:port/folder/<path>?dcPath=DC0&dsName=<ds> for "[ds] path"."""
        from urllib.parse import quote, urlencode

        ds, rel = _split_ds_path(ds_path)
        query = urlencode({"dcPath": self.datacenter, "dsName": ds})
        return f"https://{self.host}:{self.port}/folder/{quote(rel)}?{query}"

    # -- inventory ---------------------------------------------------------------------
    def find_vm(self, name: str, si: Any | None = None) -> Any:
        from pyVmomi import vim

        content = (si or self.si).content
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True
        )
        try:
            for vm in view.view:
                if vm.name == name:
                    return vm
        finally:
            view.Destroy()
        raise LookupError(f"no VM named {name!r}")

    def create_vm(
        self, name: str, disks: int = 1, fill: bool = True, size: int = DISK_SIZE, host: str = HOST
    ) -> Any:
        """A new powered-on VM on `host` with `disks` thin disks of `size` bytes on LocalDS_0,
        filled like the fixture's source VMs when `fill` (see fill_disk)."""
        from pyVmomi import vim

        vm = _create_vm(self.si, name, [_flat_backing(vim) for _ in range(disks)], size, host)
        for i in range(disks if fill else 0):
            fill_disk(self, name, i)
        return vm

    def disks(self, vm_name: str) -> list[Any]:
        """The VM's VirtualDisk devices, in device order."""
        from pyVmomi import vim

        vm = self.find_vm(vm_name)
        return [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]

    # -- disk data ---------------------------------------------------------------------
    def local_path(self, ds_path: str) -> Path:
        """The local data file of a disk given by its datastore path ("[LocalDS_0] a/b.vmdk" ->
        <datastore_dir>/a/b-flat.vmdk). Works for snapshot disks and hot-added disks too."""
        ds, rel = _split_ds_path(ds_path)
        if ds != self.datastore:
            raise ValueError(f"{ds_path}: not on {self.datastore}")
        if rel.endswith(".vmdk") and not rel.endswith("-flat.vmdk"):
            rel = rel[: -len(".vmdk")] + "-flat.vmdk"
        return self.datastore_dir / rel

    def disk_path(self, vm_name: str, disk_index: int = 0) -> Path:
        """The flat file holding the VM's disk number disk_index (its current data)."""
        return self.local_path(self.disks(vm_name)[disk_index].backing.fileName)

    def write_disk(self, vm_name: str, offset: int, data: bytes, disk_index: int = 0) -> None:
        """Write into the VM's disk as its guest would (the simulator runs no guest)."""
        with open(self.disk_path(vm_name, disk_index), "r+b") as f:
            f.seek(offset)
            f.write(data)

    def read_disk(self, vm_name: str, offset: int, length: int, disk_index: int = 0) -> bytes:
        with open(self.disk_path(vm_name, disk_index), "rb") as f:
            f.seek(offset)
            return f.read(length)

    def sha256_of_disk(self, vm_name: str, disk_index: int = 0) -> str:
        return sha256_of_file(self.disk_path(vm_name, disk_index))

    def close(self) -> None:
        if self._si is not None:
            from pyVim.connect import Disconnect

            with contextlib.suppress(Exception):  # the simulator may already be gone
                Disconnect(self._si)
            self._si = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _split_ds_path(ds_path: str) -> tuple[str, str]:
    if not ds_path.startswith("[") or "]" not in ds_path:
        raise ValueError(f"not a datastore path: {ds_path!r}")
    ds, _, rel = ds_path[1:].partition("]")
    return ds, rel.strip()


def _read_banner(process: subprocess.Popen[bytes], log: Path) -> dict[str, str]:
    """KEY=value words the simulator prints on stdout, up to its "export GOVC_URL=..." line."""
    lines: queue.Queue[bytes] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    values: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while "GOVC_URL" not in values:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic())).decode()
        except queue.Empty:
            if process.poll() is not None:
                pytest.fail(
                    f"vcsim exited ({process.returncode}): {log.read_text()}", pytrace=False
                )
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("vcsim did not print its URL within 30 s", pytrace=False)
            continue
        for word in line.replace("export ", "").split():
            key, _, value = word.partition("=")
            values[key] = value
    return values


def start_vcsim(binary: Path, workdir: Path) -> Vcsim:
    """Start the simulator (its datastores go under workdir) and read its address."""
    workdir.mkdir(parents=True, exist_ok=True)
    cert = workdir / "vcsim.pem"
    args = ["-l", "127.0.0.1:0", "-username", USER, "-password", PASSWORD, "-cert-out", str(cert)]
    with open(workdir / "vcsim.log", "wb") as log:
        process = subprocess.Popen(
            [str(binary), *args, "-stdin-watch"],
            stdin=subprocess.PIPE,  # closed when pytest dies: -stdin-watch then stops the simulator
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "TMPDIR": str(workdir)},
        )
    values = _read_banner(process, workdir / "vcsim.log")
    url = urlsplit(values["GOVC_URL"])
    assert url.hostname and url.port
    return Vcsim(
        url=f"https://{url.hostname}:{url.port}/sdk",
        host=url.hostname,
        port=url.port,
        user=USER,
        password=PASSWORD,
        thumbprint=values["VCSIM_THUMBPRINT_SHA256"],
        thumbprint_sha1=values["VCSIM_THUMBPRINT_SHA1"],
        cert_file=cert,
        datastore_dir=Path(),  # set by prepare_inventory
        process=process,
    )


# -- inventory set-up through the vSphere API ------------------------------------------
def _disk_spec(vim: Any, key: int, unit: int, backing: Any, size: int = DISK_SIZE) -> Any:
    spec = vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create")
    spec.device = vim.vm.device.VirtualDisk(
        key=key, controllerKey=-100, unitNumber=unit, capacityInKB=size // 1024, backing=backing
    )
    return spec


def _flat_backing(vim: Any, mode: str = "persistent") -> Any:
    return vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName=f"[{DATASTORE}]", diskMode=mode, thinProvisioned=True
    )


def _create_vm(
    si: Any, name: str, disks: list[Any], size: int = DISK_SIZE, host_name: str = HOST
) -> Any:
    from pyVmomi import vim

    content = si.content
    dc = next(e for e in content.rootFolder.childEntity if e.name == DATACENTER)
    cluster = next(
        e for e in dc.hostFolder.childEntity if isinstance(e, vim.ClusterComputeResource)
    )
    host = next(h for h in cluster.host if h.name == host_name)
    controller = vim.vm.device.VirtualDeviceSpec(operation="add")
    controller.device = vim.vm.device.VirtualLsiLogicController(
        key=-100, busNumber=0, sharedBus="noSharing"
    )
    devices = [controller] + [
        _disk_spec(vim, -(i + 1), i, backing, size) for i, backing in enumerate(disks)
    ]
    spec = vim.vm.ConfigSpec(
        name=name,
        guestId="otherGuest64",
        numCPUs=1,
        memoryMB=256,
        files=vim.vm.FileInfo(vmPathName=f"[{DATASTORE}]"),
        deviceChange=devices,
    )
    vm = wait_task(si, dc.vmFolder.CreateVM_Task(config=spec, pool=cluster.resourcePool, host=host))
    wait_task(si, vm.PowerOnVM_Task())
    return vm


def fill_disk(vcsim: Vcsim, vm_name: str, disk_index: int) -> None:
    """Size the disk file to its capacity and write deterministic content in a few places: the
    first MiB, 256 KiB pieces at 8, 21, 33 and 50 MiB and 100,000 bytes at 40 MiB + 12,345 (not
    64 KiB aligned); pieces past the capacity are left out."""
    disk = vcsim.disks(vm_name)[disk_index]
    capacity = disk.capacityInKB * 1024
    with open(vcsim.local_path(disk.backing.fileName), "r+b") as f:
        f.truncate(capacity)
    rng = random.Random(f"{vm_name}/{disk_index}")
    pieces = (
        [(0, MiB)]
        + [(mib * MiB, 256 * 1024) for mib in (8, 21, 33, 50)]
        + [(40 * MiB + 12345, 100_000)]
    )
    for offset, length in pieces:
        if offset + length <= capacity:
            vcsim.write_disk(vm_name, offset, rng.randbytes(length), disk_index)


def prepare_inventory(vcsim: Vcsim) -> None:
    from pyVmomi import vim

    si = vcsim.si
    ds = next(d for d in si.content.rootFolder.childEntity[0].datastore if d.name == DATASTORE)
    vcsim.datastore_dir = Path(ds.info.url)

    for name, count in SOURCE_VMS.items():
        vcsim.create_vm(name, disks=count)

    rdm = vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo(
        fileName=f"[{DATASTORE}]",
        compatibilityMode="physicalMode",
        diskMode="independent_persistent",
        deviceName=RDM_DEVICE,
        lunUuid="0200000000600c2900000000000000000000000aa566972747561",
    )
    _create_vm(si, RDM_VM, [_flat_backing(vim), rdm, _flat_backing(vim, "independent_persistent")])
    fill_disk(vcsim, RDM_VM, 0)
    fill_disk(vcsim, RDM_VM, 2)

    vcsim.create_vm(PROXY_VM, fill=False, size=MiB)
    vcsim.create_vm(REMOTE_PROXY_VM, fill=False, size=MiB, host=OTHER_HOST)


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    return build_vcsim()


@pytest.fixture(scope="module")
def vcsim(vcsim_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    sim = start_vcsim(vcsim_binary, tmp_path_factory.mktemp("vcsim"))
    try:
        prepare_inventory(sim)
        yield sim
    finally:
        sim.close()
