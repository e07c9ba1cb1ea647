"""Stand-alone restore: ``python -m storage`` needs only a repository and its passphrase.

No database and no console: when both are lost, this still lists, verifies and restores.

    python -m storage list REPO
    python -m storage verify REPO [--deep] [--point ID]
    python -m storage restore REPO POINT DISK TARGET
    python -m storage export-key REPO
    python -m storage passwd REPO

REPO is a directory or s3://bucket/prefix (with --endpoint, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY). The passphrase comes from BACKUPCONSOLE_PASSPHRASE, --passphrase-file, or
a prompt.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys

from storage.engine.backend import BackendError
from storage.engine.envelope import CorruptObject
from storage.engine.keys import WrongPassphrase
from storage.engine.locations import open_backend
from storage.engine.reader import restore_disk
from storage.engine.repository import Repository, RepositoryError
from storage.engine.verify import verify_repository


def _passphrase(args: argparse.Namespace) -> str | None:
    if args.passphrase_file:
        with open(args.passphrase_file) as handle:
            return handle.read().rstrip("\n")
    if os.environ.get("BACKUPCONSOLE_PASSPHRASE"):
        return os.environ["BACKUPCONSOLE_PASSPHRASE"]
    if sys.stdin.isatty():
        return getpass.getpass("Repository passphrase: ")
    return None


def _open(args: argparse.Namespace) -> Repository:
    backend = open_backend(args.repository, endpoint=args.endpoint)
    return Repository.open(backend, passphrase=_passphrase(args))


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"


def cmd_list(args: argparse.Namespace) -> int:
    repo = _open(args)
    print(f"{'restore point':<34} {'VM':<24} {'created (UTC)':<20} {'disks':<20} size")
    for manifest in repo.manifests():
        disks = ",".join(d.device_key for d in manifest.disks)
        print(
            f"{manifest.id:<34} {manifest.vm_name[:24]:<24} "
            f"{manifest.created:%Y-%m-%d %H:%M:%S}  {disks[:20]:<20} "
            f"{_size(manifest.stats.logical_bytes)}"
        )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    repo = _open(args)
    results = verify_repository(repo, deep=args.deep)
    if args.point:
        results = [r for r in results if r.key.endswith("/" + args.point)]
    failed = 0
    for result in results:
        if result.ok:
            print(f"ok       {result.key}")
            continue
        failed += 1
        print(f"CORRUPT  {result.key}: {result.manifest_error}")
        for problem in result.problems:
            ranges = ", ".join(f"{s}-{e}" for s, e in problem.ranges[:10])
            reasons = "; ".join(problem.reasons[:3])
            print(f"         disk {problem.device_key}: bytes {ranges}; {reasons}")
    mode = "deep" if args.deep else "fast"
    print(f"{len(results)} restore point(s) checked ({mode}), {failed} corrupt")
    return 1 if failed else 0


def cmd_restore(args: argparse.Namespace) -> int:
    repo = _open(args)
    manifest = repo.find(args.point)
    stats = restore_disk(repo, manifest, args.disk, args.target)
    written = _size(stats.bytes_written)
    print(f"restored {args.disk} of {manifest.id} to {args.target} ({written} written)")
    return 0


def cmd_export_key(args: argparse.Namespace) -> int:
    repo = _open(args)  # proves the passphrase opens it before anything is printed
    print(json.dumps(repo.export_key(), indent=1, sort_keys=True))
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    repo = _open(args)
    new = getpass.getpass("New passphrase: ")
    if new != getpass.getpass("Repeat it: "):
        print("The passphrases differ; nothing changed.", file=sys.stderr)
        return 1
    repo.change_passphrase(new)
    print("Passphrase changed (no data was rewritten).")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storage", description=__doc__.split("\n")[0])
    parser.add_argument("--endpoint", help="S3 endpoint URL")
    parser.add_argument("--passphrase-file")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list restore points")
    p.add_argument("repository")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("verify", help="verify restore points")
    p.add_argument("repository")
    p.add_argument("--deep", action="store_true", help="read and re-hash every chunk")
    p.add_argument("--point")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("restore", help="restore one disk to a raw file or block device")
    p.add_argument("repository")
    p.add_argument("point")
    p.add_argument("disk")
    p.add_argument("target")
    p.set_defaults(func=cmd_restore)
    p = sub.add_parser("export-key", help="print the wrapped key (keep it apart from the data)")
    p.add_argument("repository")
    p.set_defaults(func=cmd_export_key)
    p = sub.add_parser("passwd", help="change the passphrase")
    p.add_argument("repository")
    p.set_defaults(func=cmd_passwd)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (WrongPassphrase, RepositoryError, BackendError, CorruptObject, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
