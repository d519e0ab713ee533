"""``manage.py xds_endpoints load FILE`` / ``manage.py xds_endpoints list``: the consumer's endpoint directory.

FILE is YAML (or JSON when it ends in ``.json``): a list of ``{kind, unique_id, url[, description]}``
with kind ``repository`` (ITI-43) or ``imaging_source`` (RAD-69).  Every entry is checked before
anything is written; one bad entry loads nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from consumer.directory import DirectoryFileError, load, parse_directory_file
from consumer.models import Endpoint


class Command(BaseCommand):
    help = "Load or list the Imaging Document Consumer's endpoint directory (repositories, imaging sources)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        load_parser = sub.add_parser("load", help="create or update endpoints from a YAML/JSON file")
        load_parser.add_argument("file", type=Path)
        sub.add_parser("list", help="print the directory")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "load":
            try:
                entries = parse_directory_file(options["file"])
            except DirectoryFileError as exc:
                raise CommandError(str(exc)) from exc
            result = load(entries)
            self.stdout.write(f"{result.created} endpoint(s) created, {result.updated} updated")
            return
        for endpoint in Endpoint.objects.all():
            line = f"{endpoint.kind:<15} {endpoint.unique_id:<40} {endpoint.url}"
            self.stdout.write(f"{line}  {endpoint.description}" if endpoint.description else line)
