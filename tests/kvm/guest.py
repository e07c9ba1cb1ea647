"""A tiny Linux guest that runs the QEMU guest agent: Debian's kernel booted directly with an
initramfs holding busybox, the virtio modules and qemu-ga with its libraries (copied from the
host, which has the same Debian). `.ci/kvm-packages` unpacks the packages into the cache."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import subprocess
from pathlib import Path

CACHE = Path(os.environ.get("BACKUPCONSOLE_GUEST_CACHE", "/var/cache/backupconsole/guest"))
# Load order: each after what it depends on (modinfo -F depends).
MODULES = (
    "virtio/virtio_ring",
    "virtio/virtio",
    "virtio/virtio_pci_modern_dev",
    "virtio/virtio_pci_legacy_dev",
    "virtio/virtio_pci",
    "char/virtio_console",
)
AGENT_PORT = "org.qemu.guest_agent.0"

_INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in /modules/*.ko; do insmod "$m"; done
echo "guest: waiting for the agent port"
for i in $(seq 1 300); do
  for p in /sys/class/virtio-ports/*; do
    if [ "$(cat "$p/name" 2>/dev/null)" = "{AGENT_PORT}" ]; then port=/dev/$(basename "$p"); fi
  done
  [ -n "$port" ] && [ -e "$port" ] && break
  sleep 0.1
done
echo "guest: starting qemu-ga on $port"
exec /usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run
"""


def missing() -> str | None:
    needed = [kernel(), CACHE / "usr/sbin/qemu-ga", CACHE / "bin/busybox"]
    absent = [str(p) for p in needed if p is None or not p.exists()]
    return ", ".join(absent) if absent else None


def kernel() -> Path | None:
    found = sorted((CACHE / "boot").glob("vmlinuz-*")) if (CACHE / "boot").is_dir() else []
    return found[-1] if found else None


def build_initramfs(out: Path) -> Path:
    """Write a gzipped newc cpio archive to ``out``; the kernel unpacks it as its root."""
    vmlinuz = kernel()
    assert vmlinuz is not None
    release = vmlinuz.name.removeprefix("vmlinuz-")
    files: dict[str, bytes | Path] = {
        "init": _INIT.encode(),
        "bin/busybox": CACHE / "bin/busybox",
        "usr/sbin/qemu-ga": CACHE / "usr/sbin/qemu-ga",
    }
    for index, module in enumerate(MODULES):
        source = CACHE / f"lib/modules/{release}/kernel/drivers/{module}.ko"
        files[f"modules/{index:02d}-{Path(module).name}.ko"] = source
    for library in _libraries(CACHE / "usr/sbin/qemu-ga"):
        files[str(library).lstrip("/")] = library
    archive = io.BytesIO()
    directories = sorted({str(Path(name).parent) for name in files} - {"."})
    inode = 1
    for directory in _with_parents(directories):
        _entry(archive, inode, directory, stat.S_IFDIR | 0o755, b"")
        inode += 1
    for name, content in sorted(files.items()):
        data = content if isinstance(content, bytes) else content.read_bytes()
        # Executable bits on libraries too: the dynamic loader is exec'd like a program.
        _entry(archive, inode, name, stat.S_IFREG | 0o755, data)
        inode += 1
    _entry(archive, inode, "TRAILER!!!", 0, b"")
    out.write_bytes(gzip.compress(archive.getvalue(), compresslevel=1))
    return out


def _libraries(binary: Path) -> list[Path]:
    """The shared libraries ``binary`` loads, resolved on the host (ldd), symlinks followed."""
    output = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    paths = []
    for line in output.splitlines():
        parts = line.split()
        candidate = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if candidate.startswith("/"):
            paths.append(Path(candidate))
    return paths  # read through symlinks: each lands in the archive under the name asked for


def _with_parents(directories: list[str]) -> list[str]:
    every = set()
    for directory in directories:
        path = Path(directory)
        every.update(str(p) for p in [path, *path.parents] if str(p) != ".")
    return sorted(every, key=lambda d: (d.count("/"), d))


def _entry(archive: io.BytesIO, inode: int, name: str, mode: int, data: bytes) -> None:
    encoded = name.encode() + b"\0"
    fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    archive.write(b"070701" + b"".join(b"%08X" % value for value in fields))
    archive.write(encoded)
    archive.write(b"\0" * (-(110 + len(encoded)) % 4))
    archive.write(data)
    archive.write(b"\0" * (-len(data) % 4))


def copy_kernel(out: Path) -> Path:
    vmlinuz = kernel()
    assert vmlinuz is not None
    shutil.copyfile(vmlinuz, out)
    return out
