"""``manage.py xds_fetch --patient 'ID^^^&OID&ISO' [...]``: the Imaging Document Consumer from the shell.

find (ITI-18) -> manifest (ITI-43) -> images (RAD-69) into ``--out DIR``; without ``--out`` the
manifests found are listed and nothing is retrieved.

Endpoints come from the directory (``manage.py xds_endpoints``).  When the registry is this server's
own (``--registry`` and XDS_CONSUMER_REGISTRY_URL empty), this server's own repository
(XDS_REPOSITORY_UNIQUE_ID) and Imaging Document Source (XDS_IMAGING_SOURCE_ID) are reachable in
process without a directory entry.

Exit status: 0 every instance present; 2 partial; 1 failure (also: nothing found).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from consumer.destinations import Destination, InstanceRef
from consumer.fetch import (
    ManifestOutcome,
    Resolvers,
    get_manifest,
    outcome_of,
    record_import,
    resolver,
    retrieve_into,
    transfer_syntaxes,
)
from consumer.find import LOCAL_REGISTRY, FindError, FindQuery, FoundManifest, find_manifests
from consumer.models import EndpointKind
from xds_core.metadata.values import CX

EXIT_OK, EXIT_FAILURE, EXIT_PARTIAL = 0, 1, 2
MB = 1_000_000


def parse_date(value: str) -> date:
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise CommandError(f"date {value!r}: expected YYYY-MM-DD or YYYYMMDD")


class CountingDestination:
    """The destination, counting the bytes handed to it (for MB and MB/s)."""

    def __init__(self, inner: Destination) -> None:
        self.inner = inner
        self.bytes = 0

    def has(self, ref: InstanceRef) -> bool:
        return self.inner.has(ref)

    def put(self, ref: InstanceRef, part10: Path | bytes) -> None:
        size = part10.stat().st_size if isinstance(part10, Path) else len(part10)
        self.inner.put(ref, part10)
        self.bytes += size

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        # What else the destination offers (series_present, flush) stays visible through the counter.
        return getattr(self.inner, name)


class ProgressLine:
    """instances, MB, MB/s, ETA on one rewritten stderr line."""

    def __init__(self, stream: OutputWrapper, destination: CountingDestination, total: int) -> None:
        self.stream = stream
        self.destination = destination
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, event: Any) -> None:
        if event.kind == "instance":
            self.done += 1
        elif event.kind == "series":
            self.done += event.done  # already present
        elif event.kind in ("retry", "error") and event.message:
            self.stream.write(f"\n{event.kind}: {event.message}")
        now = time.monotonic()
        if now - self.last < 0.2 and self.done < self.total:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        mb = self.destination.bytes / MB
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0
        self.stream.write(f"\r{self.done}/{self.total} instances  {mb:.1f} MB  {mb / elapsed:.1f} MB/s  "
                          f"ETA {int(eta)}s   ", ending="")
        self.stream.flush()


class Command(BaseCommand):
    help = "Find a patient's imaging manifests (ITI-18), retrieve them (ITI-43) and their images (RAD-69)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--patient", required=True, help="XDS patient id ID^^^&OID&ISO")
        parser.add_argument("--study", help="Study Instance UID (FindDocumentsByReferenceId)")
        parser.add_argument("--since", help="creationTime on or after this date (YYYY-MM-DD)")
        parser.add_argument("--until", help="creationTime on or before this date (YYYY-MM-DD)")
        parser.add_argument("--any-format", action="store_true", help="no $XDSDocumentEntryFormatCode filter")
        parser.add_argument("--include-deprecated", action="store_true", help="also Deprecated manifests")
        parser.add_argument("--out", type=Path, help="directory the images are written to")
        parser.add_argument("--to-pacs", metavar="AET@HOST:PORT",
                            help="import the images into the local PACS by C-STORE (import reconciliation)")
        parser.add_argument("--to-dicomweb", metavar="URL",
                            help="import the images into the local PACS by STOW-RS at this DICOMweb base URL")
        parser.add_argument("--local-patient", metavar="ID^^^&OID&ISO",
                            help="with --to-pacs/--to-dicomweb: this hospital's own id of the patient, which the "
                                 "imported instances are coerced to (IHE IRWF.b; old values kept in (0400,0561))")
        parser.add_argument("--calling-ae", default=None, help="our AE title for --to-pacs (default DICOM_AE_TITLE)")
        parser.add_argument("--registry", help="registry URL (default: XDS_CONSUMER_REGISTRY_URL)")
        parser.add_argument("--compress", action="store_true", help="ask for lossless compressed transfer syntaxes")
        parser.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
        parser.add_argument("--progress", action="store_true", help="progress on stderr even when not a TTY")
        parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")

    def handle(self, *args: Any, **options: Any) -> None:
        code = self.run(options)
        if code != EXIT_OK:
            raise SystemExit(code)

    def run(self, options: dict[str, Any]) -> int:
        self.check_destination(options)
        registry = options["registry"] if options["registry"] is not None else settings.XDS_CONSUMER_REGISTRY_URL
        if registry and not registry.startswith(("http://", "https://")):
            raise CommandError(f"--registry {registry!r}: expected an http:// or https:// URL")
        since = parse_date(options["since"]).strftime("%Y%m%d") if options["since"] else None
        # --until is inclusive (a day); $XDSDocumentEntryCreationTimeTo is exclusive (ITI TF-2a 3.18.4.1.2.3.6).
        until = ((parse_date(options["until"]) + timedelta(days=1)).strftime("%Y%m%d")
                 if options["until"] else None)
        query = FindQuery(
            patient_id=options["patient"],
            format_codes=() if options["any_format"] else tuple(settings.XDS_CONSUMER_KOS_FORMAT_CODES),
            study_instance_uid=options["study"], include_deprecated=options["include_deprecated"],
            since=since, until=until)
        report: dict[str, Any] = {"patient": query.patient_id, "registry": registry or LOCAL_REGISTRY,
                                  "manifests": [], "notes": [], "skipped": []}
        try:
            found = find_manifests(registry, query, timeout=options["timeout"])
        except FindError as exc:
            return self.finish(report, EXIT_FAILURE, f"find failed: {exc}", options)
        report["notes"] = found.notes
        report["skipped"] = [{"unique_id": uid, "reason": why} for uid, why in found.skipped]
        for note in found.notes:
            self.stderr.write(note)
        if not found.manifests:
            return self.finish(report, EXIT_FAILURE, f"no imaging manifest found for patient {query.patient_id}"
                               + (f" and study {query.study_instance_uid}" if query.study_instance_uid else ""),
                               options)
        own = not registry  # this server's registry: its own repository and imaging source are in process
        outcomes = [self.one(m, options, own) for m in found.manifests]
        report["manifests"] = [asdict(o) for o in outcomes]
        if all(not o.error and o.failed == 0 for o in outcomes):
            code = EXIT_OK
        elif any(o.retrieved + o.already_present > 0 for o in outcomes) or (
                not self.retrieving(options) and any(not o.error for o in outcomes)):
            code = EXIT_PARTIAL
        else:
            code = EXIT_FAILURE
        return self.finish(report, code, "", options)

    def finish(self, report: dict[str, Any], code: int, message: str, options: dict[str, Any]) -> int:
        report["exit_code"] = code
        if message:
            report["error"] = message
            self.stderr.write(message)
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        return code

    def one(self, found: FoundManifest, options: dict[str, Any], own: bool) -> ManifestOutcome:
        resolvers = self.resolvers(own)
        outcome = outcome_of(found)
        retrieved = get_manifest(found, resolvers, outcome, timeout=options["timeout"])
        if retrieved is None:
            self.stderr.write(f"manifest {found.unique_id}: {outcome.error}")
            return outcome
        manifest = retrieved.manifest
        if not self.retrieving(options):
            self.summary(f"manifest {found.unique_id} ({found.creation_time}): "
                         f"{len(manifest.studies)} study(ies), {manifest.instance_count} instances", options)
            return outcome
        destination = CountingDestination(self.destination(options, found))
        show = options["progress"] or self.stderr_is_tty()
        progress: Callable[[Any], None] | None = (
            ProgressLine(self.stderr, destination, manifest.instance_count) if show else None)
        try:
            retrieve_into(retrieved, destination, resolvers, outcome, syntaxes=transfer_syntaxes(options["compress"]),
                          progress=progress, timeout=options["timeout"])
        finally:
            if show:
                self.stderr.write("")
        if not options.get("out"):  # an import into this site's archive (PS3.15 A.5.3.5)
            record_import(retrieved, outcome, resolvers, importer=settings.XDS_SITE_CONSUMER_IDENTITY,
                          local_patient=options["local_patient"],
                          archive=options.get("to_pacs") or options["to_dicomweb"])
        for study in outcome.per_study:
            self.summary(f"study {study['study']}: {study['already_present'] + study['retrieved']}/"
                         f"{study['requested']} instances present ({study['retrieved']} retrieved, "
                         f"{study['already_present']} already there, {study['failed']} failed) "
                         f"{outcome.bytes / MB:.1f} MB in {outcome.seconds:.1f}s", options)
        return outcome

    @staticmethod
    def retrieving(options: dict[str, Any]) -> bool:
        return any(options.get(key) for key in ("out", "to_pacs", "to_dicomweb"))

    @staticmethod
    def check_destination(options: dict[str, Any]) -> None:
        chosen = [key for key in ("out", "to_pacs", "to_dicomweb") if options.get(key)]
        if len(chosen) > 1:
            raise CommandError("choose one destination: --out, --to-pacs or --to-dicomweb")
        if chosen and chosen[0] != "out":
            if not options.get("local_patient"):
                raise CommandError("--to-pacs / --to-dicomweb need --local-patient (this hospital's id of the patient)")
            problems = CX.problems(options["local_patient"])
            if problems:
                raise CommandError(f"--local-patient {options['local_patient']!r}: {'; '.join(problems)}")
        if options.get("to_pacs"):
            ae_title, _, address = options["to_pacs"].partition("@")
            host, _, port = address.rpartition(":")
            if not (ae_title and host and port.isdigit() and 0 < int(port) < 65536 and len(ae_title) <= 16):
                raise CommandError(f"--to-pacs {options['to_pacs']!r}: expected AET@host:port")
        if options.get("to_dicomweb") and not options["to_dicomweb"].startswith(("http://", "https://")):
            raise CommandError(f"--to-dicomweb {options['to_dicomweb']!r}: expected an http:// or https:// URL")

    @staticmethod
    def destination(options: dict[str, Any], found: FoundManifest) -> Any:
        """The Destination the options name; an import coerces to ``--local-patient`` (IHE IRWF.b)."""
        if options.get("out"):
            from consumer.files import FilesDestination

            return FilesDestination(options["out"], writers=2)  # file creation and fsync overlap the reading
        from consumer.pacs_import import DicomImport, DicomwebImport, reconciliation_for

        reconciliation = reconciliation_for(options["local_patient"], found.patient_id or options["patient"],
                                            settings.XDS_SITE_CONSUMER_IDENTITY)
        from atna.tls import node_client_context  # under XDS_TLS the PACS sees this node's certificate

        if options.get("to_dicomweb"):
            return DicomwebImport(options["to_dicomweb"], reconciliation, timeout=options["timeout"],
                                  tls=node_client_context())
        from consumer.dicom_import import StoreScp

        ae_title, _, address = options["to_pacs"].partition("@")
        host, _, port = address.rpartition(":")
        tls = None if settings.DICOM_PACS_TLS == "off" else node_client_context()
        return DicomImport(options.get("calling_ae") or settings.DICOM_AE_TITLE,
                           StoreScp(ae_title, host, int(port), tls), reconciliation)

    def summary(self, line: str, options: dict[str, Any]) -> None:
        (self.stderr if options["json"] else self.stdout).write(line)

    def stderr_is_tty(self) -> bool:
        return self.stderr.isatty()

    @staticmethod
    def resolvers(own: bool) -> Resolvers:
        """The endpoint directory; with this server's own registry, also its own repository and imaging
        source in process."""
        return Resolvers(
            resolver(EndpointKind.REPOSITORY, (settings.XDS_REPOSITORY_UNIQUE_ID, "local:repository") if own else None),
            resolver(EndpointKind.IMAGING_SOURCE,
                     (settings.XDS_IMAGING_SOURCE_ID, "local:imaging-source") if own else None))
