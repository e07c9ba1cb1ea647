"""A private libvirtd + virtlogd for tests, benchmarks and development, plus helpers that define
throw-away TCG domains and write into their disks the way a guest would.

Why a mount + PID namespace: a privileged libvirtd reads ``/etc/libvirt/qemu.conf`` and uses
``/run/libvirt``, ``/var/lib/libvirt``, ... with no option to move them (``--config`` only covers
``libvirtd.conf``; ``LIBVIRT_*``/``XDG_*`` overrides only apply to unprivileged session daemons,
which cannot use root-owned test files). So :class:`LocalLibvirt` starts the daemons inside
``unshare --mount --pid`` and bind-mounts directories under its own ``root`` over those paths.
The system's files stay untouched, a system libvirtd can keep running beside it, and the daemons
see a ``qemu.conf`` with ``user = "root"`` (the stock ``libvirt-qemu`` user makes every domain
start take ~56 s on these machines). The PID namespace guarantees that nothing is left behind:
when its init exits, the kernel kills libvirtd, virtlogd and every QEMU they started. The init
exits when :meth:`LocalLibvirt.stop` closes its control pipe, or when the owning process dies.

Only the socket is shared with the outside: ``root/run/libvirt-sock`` is
``/run/libvirt/libvirt-sock`` inside the namespace, so clients use
``qemu:///system?socket=<root>/run/libvirt-sock``. Disk images, NBD sockets and scratch files
live in paths the namespace does not hide (e.g. pytest's tmp dirs), so they are the same on both
sides.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

if TYPE_CHECKING:
    import libvirt

# Inside the namespace these system paths are replaced by directories under ``root``.
_BIND_MOUNTS: tuple[tuple[str, str], ...] = (
    ("etc", "/etc/libvirt"),
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
)

_LIBVIRTD_CONF = """\
# Written by inventory.kvm.libvirt_env: unix sockets only, no auth (only root can reach the
# socket: its directory is private to the test run).
listen_tls = 0
listen_tcp = 0
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
unix_sock_admin_perms = "0700"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

_QEMU_CONF = """\
# Written by inventory.kvm.libvirt_env.
# root instead of libvirt-qemu: domain start 0.3 s instead of 56 s, and QEMU can create NBD
# sockets in root-owned test directories.
user = "root"
group = "root"
# Test disks stay owned by whoever created them; no xattrs left on them.
dynamic_ownership = 0
remember_owner = 0
# Leave the host's cgroups alone, and skip the per-domain /dev namespace (faster, nothing to gain).
cgroup_controllers = [ ]
namespaces = [ ]
security_driver = "none"
stdio_handler = "logd"
"""

_VIRTLOGD_CONF = """\
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
"""

QCOW2_CLUSTER = 65536


class LibvirtEnvError(RuntimeError):
    """The private daemons could not be started, or a helper's QEMU command failed."""


def missing_requirements() -> list[str]:
    """What is missing on this machine to run :class:`LocalLibvirt` (empty when all is there).
    ``.ci/kvm-packages`` installs all of it."""
    missing = [
        tool
        for tool in ("libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img", "unshare", "mount")
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None
    ]
    try:
        import libvirt  # noqa: F401
        import libvirt_qemu  # noqa: F401
    except ImportError:
        missing.append("python module libvirt (pip install libvirt-python)")
    if os.geteuid() != 0:
        missing.append("root (the private libvirtd runs privileged in its own namespaces)")
    return missing


def _sbin(tool: str) -> str:
    found = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        raise LibvirtEnvError(f"{tool} not found (run .ci/kvm-packages)")
    return found


class LocalLibvirt:
    """A private libvirtd + virtlogd whose whole state lives under ``root``.

    ``with LocalLibvirt(tmpdir) as env: conn = libvirt.open(env.uri)``. Start takes well under a
    second (QEMU capabilities are probed on first use, about 1 s more). ``stop()`` kills the
    daemons and every domain they run, and removes the sockets; it is safe to call twice.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        cache_dir: Path | str | None = None,
        start_timeout: float = 10.0,
        tcp_port: int | None = None,
        backup_tls_dir: Path | str | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        # A host the proxy reaches over the network, as a remote KVM host is: libvirt's remote
        # protocol on 127.0.0.1:tcp_port (no auth: tests only) and pull-backup NBD exports behind
        # TLS with client certificates from backup_tls_dir (ca-cert.pem, server-cert.pem, ...).
        self.tcp_port = tcp_port
        self.backup_tls_dir = Path(backup_tls_dir).absolute() if backup_tls_dir else None
        # libvirt caches what it probed of the QEMU binary (~0.8 s, paid by the first define
        # after start) and revalidates the cache against the binary, so it may be shared between
        # instances and kept across restarts. Default: ``root/cache``.
        self.cache_dir = Path(cache_dir).absolute() if cache_dir else self.root / "cache"
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: int | None = None  # write end of the init's control pipe

    @property
    def socket_path(self) -> Path:
        return self.root / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket_path}"

    @property
    def tcp_uri(self) -> str:
        """The URI a proxy on another machine would use (``qemu+tcp://``); needs ``tcp_port``."""
        if self.tcp_port is None:
            raise LibvirtEnvError("this libvirtd does not listen on TCP (no tcp_port)")
        return f"qemu+tcp://127.0.0.1:{self.tcp_port}/system"

    @property
    def log_dir(self) -> Path:
        """libvirtd.log, virtlogd.log and qemu/<domain>.log (QEMU's stderr) end up here."""
        return self.root / "log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> LocalLibvirt:
        if self.running:
            return self
        self._prepare_root()
        unshare = _sbin("unshare")
        read_end, write_end = os.pipe()
        # --kill-child: if `unshare` itself is killed, its child (the namespace init) is too.
        cmd = [
            unshare,
            "--mount",
            "--propagation",
            "private",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            sys.executable,
            "-I",  # isolated: the init only needs the stdlib, whatever the environment says
            str(Path(__file__).resolve()),
            "--namespace-init",
            str(self.root),
            str(self.cache_dir),
        ]
        log = (self.root / "log" / "init.log").open("ab")
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd, stdin=read_end, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            os.close(read_end)
            log.close()
        self._control = write_end
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if self._control is not None:
            os.close(self._control)  # EOF tells the init to shut down
            self._control = None
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()  # --kill-child takes the namespace init, and with it everything, down
                proc.wait(timeout=10)
        for name in ("libvirt-sock", "libvirt-sock-ro", "libvirt-admin-sock", "virtlogd-sock"):
            (self.root / "run" / name).unlink(missing_ok=True)
        for sock in (self.root / "run").glob("**/*.sock"):
            sock.unlink(missing_ok=True)

    def __enter__(self) -> LocalLibvirt:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def open(self) -> libvirt.virConnect:
        import libvirt

        return libvirt.open(self.uri)

    def _prepare_root(self) -> None:
        # A previous run in the same root may have left state behind: domains defined there would
        # be picked up again, and stale sockets would fool _wait_ready. Keep logs and the cache.
        for sub in ("etc", "run", "lib"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        for sub, _target in _BIND_MOUNTS:
            (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        libvirtd_conf, qemu_conf = _LIBVIRTD_CONF, _QEMU_CONF
        if self.tcp_port is not None:
            libvirtd_conf = libvirtd_conf.replace("listen_tcp = 0", "listen_tcp = 1") + (
                f'listen_addr = "127.0.0.1"\ntcp_port = "{self.tcp_port}"\nauth_tcp = "none"\n'
            )
        if self.backup_tls_dir is not None:
            qemu_conf += (
                f"backup_tls_x509_cert_dir = {_conf_string(str(self.backup_tls_dir))}\n"
                "backup_tls_x509_verify = 1\n"
            )
        (self.root / "etc" / "libvirtd.conf").write_text(libvirtd_conf)
        (self.root / "etc" / "qemu.conf").write_text(qemu_conf)
        # The namespace init reads this to add --listen (libvirtd ignores listen_tcp without it).
        (self.root / "etc" / "listen").write_text("1" if self.tcp_port is not None else "")
        (self.root / "etc" / "virtlogd.conf").write_text(_VIRTLOGD_CONF)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise LibvirtEnvError(f"private libvirtd exited during start:\n{self._log_tail()}")
            if self.socket_path.exists():
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    try:
                        probe.connect(str(self.socket_path))
                        return
                    except OSError:
                        pass
            time.sleep(0.02)
        raise LibvirtEnvError(
            f"private libvirtd did not answer within {self.start_timeout:.0f} s:\n"
            + self._log_tail()
        )

    def _log_tail(self, lines: int = 30) -> str:
        out = []
        for name in ("init.log", "virtlogd.out", "libvirtd.out", "libvirtd.log"):
            path = self.root / "log" / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path}\n" + "\n".join(tail))
        return "\n".join(out) or "(no logs)"


# --- the namespace init (runs as PID 1 of the new PID namespace, stdlib only) --------------------


def _namespace_init(root: Path, cache_dir: Path) -> int:
    """Mount the private directories, run virtlogd and libvirtd, reap orphans (QEMU daemonizes,
    so its zombies land here, and libvirt waits for them to vanish when destroying a domain),
    and exit when the control pipe on stdin reaches EOF."""
    for sub, target in _BIND_MOUNTS:
        source = cache_dir if sub == "cache" else root / sub
        # Creating a missing mount point is the only visible effect outside (an empty
        # /run/libvirt, say): mounts made in this namespace do not propagate back.
        Path(target).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", str(source), target], check=True)  # noqa: S603,S607

    log = root / "log"
    etc = root / "etc"
    run = root / "run"
    children: dict[int, str] = {}

    def spawn(name: str, argv: list[str]) -> int:
        with (log / f"{name}.out").open("ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - fixed argv
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        children[proc.pid] = name
        return proc.pid

    spawn(
        "virtlogd",
        [
            _sbin("virtlogd"),
            "--config",
            str(etc / "virtlogd.conf"),
            "--pid-file",
            str(run / "virtlogd.pid"),
        ],
    )
    # libvirtd only talks to virtlogd when a domain starts; still, make the order deterministic.
    deadline = time.monotonic() + 5
    while not (run / "virtlogd-sock").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    listen = ["--listen"] if (etc / "listen").read_text().strip() else []
    spawn(
        "libvirtd",
        [
            _sbin("libvirtd"),
            *listen,
            "--config",
            str(etc / "libvirtd.conf"),
            "--pid-file",
            str(run / "libvirtd.pid"),
        ],
    )

    status = 0
    while True:
        readable, _w, _x = select.select([0], [], [], 0.2)
        if readable and not os.read(0, 4096):
            break  # the owner closed the pipe or died
        died = _reap()
        for pid, code in died:
            if pid in children:
                print(f"{children[pid]} exited with status {code}", flush=True)
                status = 1
        if status:
            break

    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while children and time.monotonic() < deadline:
        for pid, _code in _reap():
            children.pop(pid, None)
        time.sleep(0.02)
    # Returning ends PID 1: the kernel SIGKILLs whatever is left (QEMU processes included).
    return status


def _conf_string(value: str) -> str:
    """A libvirt config-file string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reap() -> list[tuple[int, int]]:
    died: list[tuple[int, int]] = []
    while True:
        try:
            pid, code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return died
        if pid == 0:
            return died
        died.append((pid, code))


# --- domains -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainDisk:
    target: str  # "sda"
    alias: str  # "scsi0-0-0-0": the qdev id that `qemu-io -d` wants
    source: Path


def create_qcow2(path: Path, size: int) -> None:
    subprocess.run(  # noqa: S603
        [_sbin("qemu-img"), "create", "-q", "-f", "qcow2", str(path), str(size)], check=True
    )


@dataclass(frozen=True)
class GuestBoot:
    """Direct kernel boot of a small guest (see tests/kvm/guest.py), its console to a file."""

    kernel: Path
    initrd: Path
    console_log: Path
    cmdline: str = "console=ttyS0 panic=-1 quiet"


def define_test_domain(
    conn: libvirt.virConnect,
    name: str,
    disks: list[Path],
    workdir: Path,
    *,
    disk_size: int = 64 * 1024 * 1024,
    start: bool = True,
    boot: GuestBoot | None = None,
) -> libvirt.virDomain:
    """Define (and start) a TCG q35 domain without an OS whose disks are qcow2 files on
    virtio-scsi (``scsi-hd``, so ``qemu-io -d <alias>`` works: it needs a real qdev drive).
    Missing disk images are created with ``disk_size``; relative paths resolve against
    ``workdir``. SeaBIOS finds nothing to boot and idles, so the domain runs but costs no CPU.
    With ``boot``, a kernel and initramfs boot directly, with a guest-agent channel."""
    if len(disks) > 26:
        raise ValueError("at most 26 disks (sda..sdz)")
    workdir.mkdir(parents=True, exist_ok=True)
    disk_xml = []
    for index, disk in enumerate(disks):
        path = disk if disk.is_absolute() else workdir / disk
        if not path.exists():
            create_qcow2(path, disk_size)
        target = "sd" + chr(ord("a") + index)
        # cache='unsafe' would skip flushes we want to exercise; the default (writeback) is fine
        # on any filesystem, unlike cache='none' (O_DIRECT) which tmpfs refuses.
        disk_xml.append(
            f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file={quoteattr(str(path.absolute()))}/>
      <target dev='{target}' bus='scsi'/>
      <address type='drive' controller='0' bus='0' target='0' unit='{index}'/>
    </disk>"""
        )
    os_xml, memory, extra = "", 128, ""
    if boot is not None:
        os_xml = (
            f"<kernel>{escape(str(boot.kernel))}</kernel><initrd>{escape(str(boot.initrd))}</initrd>"
            f"<cmdline>{escape(boot.cmdline)}</cmdline>"
        )
        memory = 384
        extra = f"""
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <serial type='file'><source path={quoteattr(str(boot.console_log))}/></serial>"""
    xml = f"""
<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type>{os_xml}</os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{_sbin("qemu-system-x86_64")}</emulator>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <controller type='usb' model='none'/>{"".join(disk_xml)}{extra}
    <memballoon model='none'/>
  </devices>
</domain>"""
    domain = conn.defineXML(xml)
    if start:
        domain.create()
    return domain


def domain_disks(domain: libvirt.virDomain) -> list[DomainDisk]:
    """The disks of a running domain with their device aliases, from the live XML."""
    root = ET.fromstring(domain.XMLDesc(0))  # noqa: S314 - XML from our own libvirtd
    out = []
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        alias = disk.find("alias")
        source = disk.find("source")
        if target is None or alias is None or source is None:
            continue  # not running (no aliases yet), or an empty drive
        out.append(
            DomainDisk(
                target=target.attrib["dev"],
                alias=alias.attrib["name"],
                source=Path(source.attrib.get("file", "")),
            )
        )
    return out


def disk_aliases(domain: libvirt.virDomain) -> list[str]:
    """Device aliases of the running domain's disks, in XML order (``scsi0-0-0-0``, ...)."""
    return [disk.alias for disk in domain_disks(domain)]


def hmp(domain: libvirt.virDomain, command: str) -> str:
    """Run a human-monitor command through libvirt and return its text output. This taints
    the domain ("custom-monitor"), which is harmless for tests."""
    import libvirt_qemu

    result: Any = libvirt_qemu.qemuMonitorCommand(
        domain, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
    )
    return str(result)


def _qemu_io(domain: libvirt.virDomain, device_alias: str, io_command: str) -> None:
    # `-d` goes through the device's BlockBackend, exactly like guest I/O: it passes backup
    # filters and dirties bitmaps. The monitor output is empty on success and carries HMP-level
    # errors as text (unknown device, bad syntax), never as a QMP error. Failures of the I/O
    # itself ("write failed: Input/output error") go to QEMU's stdout, i.e. the domain log, not
    # to the monitor: hence the range check in the callers.
    output = hmp(domain, f'qemu-io -d {device_alias} "{io_command}"')
    if output.strip():
        raise LibvirtEnvError(f"qemu-io {device_alias} {io_command!r}: {output.strip()}")


def _check_range(domain: libvirt.virDomain, device_alias: str, offset: int, length: int) -> None:
    for disk in domain_disks(domain):
        if disk.alias == device_alias:
            capacity = int(domain.blockInfo(disk.target)[0])
            if offset < 0 or length <= 0 or offset + length > capacity:
                raise ValueError(
                    f"{device_alias}: range {offset}+{length} outside the disk (size {capacity})"
                )
            return
    raise LibvirtEnvError(f"{device_alias}: device not found in domain {domain.name()}")


def guest_write(
    domain: libvirt.virDomain, device_alias: str, offset: int, length: int, pattern: int
) -> None:
    """Write ``length`` bytes of ``pattern`` at ``offset`` as the guest would."""
    if not 0 <= pattern <= 0xFF:
        raise ValueError(f"pattern must be one byte, got {pattern}")
    _check_range(domain, device_alias, offset, length)
    _qemu_io(domain, device_alias, f"write -P 0x{pattern:02x} {offset} {length}")


def guest_write_zero(
    domain: libvirt.virDomain, device_alias: str, offset: int, length: int
) -> None:
    """Write zeroes (``write -z``: a write-zeroes request, which also dirties bitmaps)."""
    _check_range(domain, device_alias, offset, length)
    _qemu_io(domain, device_alias, f"write -z {offset} {length}")


def guest_flush(domain: libvirt.virDomain, device_alias: str) -> None:
    """Flush the device so qcow2 metadata reaches the file (``qemu-img convert -U`` reads it)."""
    _qemu_io(domain, device_alias, "flush")


def remove_domain(domain: libvirt.virDomain) -> None:
    """Destroy (if running) and undefine a domain, dropping its checkpoints' metadata first
    (libvirt refuses to undefine a domain that has checkpoints). A domain that is already gone
    (a test removed it itself) is fine."""
    import libvirt

    try:
        if domain.isActive():
            domain.destroy()  # also ends a running backup job
        for checkpoint in domain.listAllCheckpoints():
            checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise


if __name__ == "__main__" and sys.argv[1:2] == ["--namespace-init"]:
    sys.exit(_namespace_init(Path(sys.argv[2]), Path(sys.argv[3])))
