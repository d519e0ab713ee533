"""manage.py xds_publish --study UID | --patient ID | --since DATE | --files PATH...

Publishes (RAD-68) the KOS manifest of each selected study: found in the PACS by the DICOM side
(C-FIND or QIDO-RS, ``imaging_source.dicom.find``), or read from local DICOM files (``--files``).
A study already published unchanged is not sent again; a changed one is replaced (RPLC); one whose
patient cannot be mapped goes to the reconciliation queue.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from imaging_source.publish import Outcome, PublishConfig, publish
from imaging_source.study import StudyRef
from kos.builder import ManifestError


class Command(BaseCommand):
    help = "Publish the KOS manifest of studies to the XDS repository (RAD-68)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--study", action="append", default=[], metavar="UID",
                            help="Study Instance UID (repeatable).")
        parser.add_argument("--patient", metavar="ID", help="every study of this DICOM Patient ID in the PACS")
        parser.add_argument("--since", metavar="DATE", help="every study dated on or after DATE (YYYY-MM-DD)")
        parser.add_argument("--files", nargs="+", metavar="PATH",
                            help="DICOM files or directories of one or more studies, instead of asking the PACS")
        parser.add_argument("--trigger", default="command", help="what is recorded as the publication's trigger")

    def handle(self, *args: Any, **options: Any) -> None:
        studies, patient, since, files = options["study"], options["patient"], options["since"], options["files"]
        if not (studies or patient or since or files):
            raise CommandError("give --study UID, --patient ID, --since DATE or --files PATH")
        config = PublishConfig.from_settings(settings)

        if files:
            refs = _studies_from_files([Path(p) for p in files])
            jobs: list[tuple[str, StudyRef | None]] = [(ref.study_instance_uid, ref) for ref in refs]
        else:
            uids = list(studies)
            if patient or since:
                uids += self._find_studies(patient, since)
            jobs = [(uid, None) for uid in dict.fromkeys(uids)]
        if not jobs:
            self.stdout.write("no study matched")
            return

        failed = 0
        total = len(jobs)
        for number, (uid, ref) in enumerate(jobs, 1):
            prefix = f"[{number}/{total}] {uid}"
            try:
                study = ref if ref is not None else self._find_study(uid)
                if study is None:
                    failed += 1
                    self.stderr.write(f"{prefix}: not found in the PACS")
                    continue
                result = publish(study, config, trigger=options["trigger"])
            except (ManifestError, LookupError, RuntimeError, OSError) as exc:
                failed += 1
                self.stderr.write(f"{prefix}: {exc}")
                continue
            line = f"{prefix}: {result.outcome} ({study.instance_count} instances) {result.message}"
            if result.outcome in (Outcome.FAILED, Outcome.IN_PROGRESS):
                failed += 1
                self.stderr.write(line)
            elif result.outcome == Outcome.QUEUED:
                self.stdout.write(self.style.WARNING(line))
            else:
                self.stdout.write(self.style.SUCCESS(line))
        if failed:
            raise CommandError(f"{failed} of {total} studies were not published")

    # The DICOM side is imported lazily: --files works without a PACS configuration.
    def _dicom_config(self) -> Any:
        from imaging_source.dicom.config import DicomConfig

        return DicomConfig.from_settings(settings)

    def _find_study(self, uid: str) -> StudyRef | None:
        from imaging_source.dicom.find import find_study

        return find_study(uid, self._dicom_config())

    def _find_studies(self, patient: str | None, since: str | None) -> list[str]:
        from imaging_source.dicom.find import find_studies

        uids = find_studies(patient, since, config=self._dicom_config())
        self.stdout.write(f"{len(uids)} studies found in the PACS")
        return uids


def _studies_from_files(paths: list[Path]) -> list[StudyRef]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise CommandError(f"{path}: no such file or directory")
    by_study: dict[str, list[Any]] = {}
    for file in files:
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception:  # not DICOM: skipped (directories hold other files too)
            continue
        if "StudyInstanceUID" in ds and "SOPInstanceUID" in ds:
            by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
    if not by_study:
        raise CommandError("no DICOM instances found in the given files")
    return [StudyRef.from_datasets(datasets) for datasets in by_study.values()]
