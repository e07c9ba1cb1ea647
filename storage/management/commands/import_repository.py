"""``manage.py import_repository``: rebuild the catalog from a repository alone.

    manage.py import_repository NAME
        re-read the manifests of a known repository and add the missing restore points;
    manage.py import_repository NAME --location PATH|s3://BUCKET/PREFIX [--passphrase-file F]
        after losing the database: attach the repository under NAME and import everything.

The passphrase comes from --passphrase-file or BACKUPCONSOLE_PASSPHRASE.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backupconsole.errors import ActionRefused
from storage import services
from storage.catalog import import_catalog
from storage.choices import RepositoryKind
from storage.models import Repository


class Command(BaseCommand):
    help = "Recreate the restore points of a repository in the database from its manifests."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--location", help="directory, or s3://bucket/prefix, to attach")
        parser.add_argument("--passphrase-file")
        parser.add_argument("--s3-endpoint", default="")
        parser.add_argument("--s3-region", default="")

    def handle(self, *args: Any, name: str, location: str | None, **options: Any) -> None:
        repository = Repository.objects.filter(name=name).first()
        if repository is None:
            if not location:
                raise CommandError(f"No repository named {name!r}: give --location to attach it.")
            repository = self._attach(name, location, options)
            count = repository.restore_points.count()
            self.stdout.write(f"Attached {name}: {count} restore point(s) imported.")
            return
        added, known = import_catalog(repository)
        self.stdout.write(f"{name}: {added} restore point(s) added, {known} already known.")

    def _attach(self, name: str, location: str, options: dict[str, Any]) -> Repository:
        passphrase = os.environ.get("BACKUPCONSOLE_PASSPHRASE", "")
        if options["passphrase_file"]:
            with open(options["passphrase_file"]) as handle:
                passphrase = handle.read().rstrip("\n")
        data: dict[str, Any] = {"name": name, "encryption_enabled": bool(passphrase)}
        secret = ""
        if location.startswith("s3://"):
            parsed = urlparse(location)
            data.update(
                kind=RepositoryKind.S3,
                location=parsed.netloc,
                s3_prefix=parsed.path.lstrip("/"),
                s3_endpoint=options["s3_endpoint"],
                s3_region=options["s3_region"],
                s3_access_key=os.environ.get("AWS_ACCESS_KEY_ID", ""),
            )
            secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        else:
            data.update(kind=RepositoryKind.FILESYSTEM, location=os.path.abspath(location))
        try:
            return services.create_repository(
                data=data, secret=secret, passphrase=passphrase, acting_user=None
            )
        except ActionRefused as exc:
            raise CommandError(exc.message) from exc
