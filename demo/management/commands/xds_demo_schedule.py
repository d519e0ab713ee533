"""``manage.py xds_demo_schedule --patient ID [--issuer OID] --modality MR``: play the RIS.

Puts a scheduled procedure for a local patient on this site's Modality Worklist (a worklist file in the
folder its demo PACS serves, ``var/demo/<site>/worklists``).  The site's DICOM listener polls that
worklist (``DICOM_WORKLIST``) and announces the new step; with ``XDS_PREFETCH`` on, the patient's
relevant priors held by other sites are imported before the examination.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from demo.worklist import worklist_item, write_worklist_item


class Command(BaseCommand):
    help = "Schedule a procedure for a local patient on this demo site's Modality Worklist."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--patient", required=True, help="the site's local DICOM Patient ID")
        parser.add_argument("--issuer", default="", help="Issuer of Patient ID")
        parser.add_argument("--name", default="", help="Patient's Name (DICOM PN)")
        parser.add_argument("--modality", required=True, help="e.g. MR, CT")
        parser.add_argument("--worklists", type=Path, help="folder of worklist files (default: the demo site's)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DICOM_WORKLIST:
            raise CommandError("this site polls no worklist (DICOM_WORKLIST is empty): run it with a demo site's "
                               "XDS_ENV_FILE")
        modality = options["modality"].strip().upper()
        if not modality.isalnum() or len(modality) > 16:
            raise CommandError(f"--modality {options['modality']!r} is not a DICOM modality (CS, e.g. MR)")
        directory = options["worklists"] or Path(settings.VAR_DIR) / "worklists"
        item = worklist_item(options["patient"], options["issuer"], options["name"], modality)
        path = write_worklist_item(directory, item)
        self.stdout.write(f"scheduled {modality} for {options['patient']}: {path} (study {item.StudyInstanceUID}); "
                          f"the site polls its worklist every {settings.DICOM_WORKLIST_POLL}s")
