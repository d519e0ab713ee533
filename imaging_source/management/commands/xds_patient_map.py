"""manage.py xds_patient_map: keep the local DICOM Patient ID -> affinity-domain patient id table.

    xds_patient_map set LOCAL_ID 'AFFINITY^^^&OID&ISO' [--issuer ISSUER] [--note TEXT]
    xds_patient_map remove LOCAL_ID [--issuer ISSUER]
    xds_patient_map list
    xds_patient_map import mappings.csv      # rows: local_id,issuer,affinity_id[,note]
"""

from __future__ import annotations

import csv
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from imaging_source.models import PatientMapping
from imaging_source.patient_mapping import set_mapping


class Command(BaseCommand):
    help = "Maintain the patient-id mapping used by the Imaging Document Source (RAD-68 patientId)."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        s = sub.add_parser("set", help="add or change one mapping")
        s.add_argument("local_id")
        s.add_argument("affinity_id", help="CX id^^^&OID&ISO")
        s.add_argument("--issuer", default="", help="DICOM Issuer of Patient ID (empty: any)")
        s.add_argument("--note", default=None)
        r = sub.add_parser("remove", help="remove one mapping")
        r.add_argument("local_id")
        r.add_argument("--issuer", default="")
        sub.add_parser("list", help="print every mapping")
        i = sub.add_parser("import", help="load mappings from a CSV file (local_id,issuer,affinity_id[,note])")
        i.add_argument("csv_file")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "set":
            try:
                created = set_mapping(options["local_id"], options["affinity_id"], issuer=options["issuer"],
                                      note=options["note"])
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"{'added' if created else 'updated'}: {options['local_id']} -> {options['affinity_id']}")
        elif action == "remove":
            deleted, _ = PatientMapping.objects.filter(local_patient_id=options["local_id"],
                                                       local_issuer=options["issuer"]).delete()
            if not deleted:
                raise CommandError(f"no mapping for {options['local_id']!r} (issuer {options['issuer']!r})")
            self.stdout.write(f"removed: {options['local_id']}")
        elif action == "list":
            for m in PatientMapping.objects.all():
                self.stdout.write(f"{m.local_patient_id}\t{m.local_issuer}\t{m.affinity_patient_id}\t{m.note}")
        elif action == "import":
            self._import(options["csv_file"])

    def _import(self, path: str) -> None:
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = [row for row in csv.reader(fh) if row and not row[0].startswith("#")]
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}") from None
        problems: list[str] = []
        counts = {"added": 0, "updated": 0}
        # All or nothing: a file with one bad row changes nothing.
        with transaction.atomic():
            for number, row in enumerate(rows, 1):
                if len(row) < 3:
                    problems.append(f"row {number}: expected local_id,issuer,affinity_id[,note]")
                    continue
                try:
                    created = set_mapping(row[0].strip(), row[2].strip(), issuer=row[1].strip(),
                                          note=row[3].strip() if len(row) > 3 else None)
                except ValueError as exc:
                    problems.append(f"row {number}: {exc}")
                    continue
                counts["added" if created else "updated"] += 1
            if problems:
                transaction.set_rollback(True)
        if problems:
            raise CommandError("nothing imported:\n" + "\n".join(problems))
        self.stdout.write(f"{counts['added']} added, {counts['updated']} updated")
