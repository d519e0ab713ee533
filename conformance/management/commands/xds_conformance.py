"""``manage.py xds_conformance``: replay the conformance manifest against any vendor's endpoints.

Talks to the systems under test only through IHE transactions over HTTP (and the
patient feed over MLLP or a command).  Prints one ``PASS|FAIL|SKIP <case> <reason>``
line per case, then ``N passed, M failed, K skipped``; progress goes to stderr.
Exit status 1 when a case failed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from atna.tls import node_client_context
from conformance import report
from conformance.codes import CodesFileError, load_codes
from conformance.manifest import ManifestError, load_manifest
from conformance.patients import DEFAULT_AUTHORITY, CommandFeed, Hl7Feed, PatientPool, parse_host_port
from conformance.runner import (
    DEFAULT_HOME_COMMUNITY_ID,
    DEFAULT_SOURCE_ID,
    FAIL,
    NIST_IMAGING_SOURCE_UNIQUE_ID,
    Config,
    Runner,
)


class Command(BaseCommand):
    help = "Replay the XDS/XDS-I.b conformance manifest against a registry, repository and imaging source."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--registry", required=True, help="Document Registry SOAP endpoint URL (ITI-42/18/51).")
        parser.add_argument("--repository", default="", help="Document Repository endpoint URL (ITI-41/43, RAD-68).")
        parser.add_argument("--imaging-source", default="", help="Imaging Document Source endpoint URL (RAD-69).")
        feed = parser.add_mutually_exclusive_group()
        feed.add_argument("--feed-hl7", metavar="HOST:PORT", help="Patient Identity Feed: HL7 v2 ADT^A04 over MLLP.")
        feed.add_argument("--feed-cmd", metavar="'CMD {pid}'",
                          help="Patient Identity Feed: shell command, {pid} = the CX id; exit 0 = fed.")
        parser.add_argument("--cases", action="append", metavar="GLOB",
                            help="Case ids to run (glob, e.g. 'REG-*'); repeatable or comma-separated. Default: all.")
        parser.add_argument("--manifest", default="",
                            help="Manifest path (default: settings.XDS_CONFORMANCE_MANIFEST).")
        parser.add_argument("--junit", default="", metavar="FILE", help="Also write a JUnit XML report.")
        parser.add_argument("--assigning-authority", default=DEFAULT_AUTHORITY,
                            help="OID of the affinity domain's patient id assigning authority.")
        parser.add_argument("--source-id", default=DEFAULT_SOURCE_ID, help="XDSSubmissionSet.sourceId of the runner.")
        parser.add_argument("--home-community-id", default=DEFAULT_HOME_COMMUNITY_ID,
                            help="Value of the $homeCommunityId$ placeholder.")
        parser.add_argument("--repository-unique-id", default="", metavar="OID",
                            help="The Document Repository's repositoryUniqueId, for steps bound to it "
                                 "({config: repositoryUniqueId}, $repuid$). Default: discovered from the registry's "
                                 "metadata of a document this run provided to --repository.")
        parser.add_argument("--imaging-source-unique-id", default=NIST_IMAGING_SOURCE_UNIQUE_ID, metavar="OID",
                            help="The Imaging Document Source's repositoryUniqueId: RAD-69 requests are addressed "
                                 "to it and its KOS must name it as RetrieveLocationUID (default: "
                                 f"{NIST_IMAGING_SOURCE_UNIQUE_ID}, what the NIST corpus assumes).")
        parser.add_argument("--timeout", type=float, default=120.0, help="Seconds to wait for each answer.")
        parser.add_argument("--no-schema", action="store_true", help="Do not schema-validate responses.")
        parser.add_argument("--codes", default=None, metavar="CODES_XML",
                            help="The affinity domain's codes.xml: codes of the corpus outside its value sets are "
                                 "rewritten as the NIST CodesUpdater does (default: settings.XDS_CONFORMANCE_CODES; "
                                 "'' = no rewrite).")

    def handle(self, *args: Any, **options: Any) -> None:
        manifest_path = Path(options["manifest"] or settings.XDS_CONFORMANCE_MANIFEST)
        try:
            manifest = load_manifest(manifest_path)
        except ManifestError as exc:
            raise CommandError("manifest problems:\n  " + "\n  ".join(exc.problems[:50])) from exc
        codes_path = settings.XDS_CONFORMANCE_CODES if options["codes"] is None else options["codes"]
        try:
            codes = load_codes(codes_path) if codes_path else None
        except CodesFileError as exc:
            raise CommandError(f"--codes: {exc}") from exc
        feed_client: Hl7Feed | CommandFeed | None = None
        if options["feed_hl7"]:
            try:
                host, port = parse_host_port(options["feed_hl7"])
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            feed_client = Hl7Feed(host, port, timeout=options["timeout"], ssl_context=node_client_context())
        elif options["feed_cmd"]:
            if "{pid}" not in options["feed_cmd"]:
                raise CommandError("--feed-cmd must contain {pid}")
            feed_client = CommandFeed(options["feed_cmd"], timeout=options["timeout"])
        patterns = [p.strip() for value in options["cases"] or [] for p in value.split(",") if p.strip()]
        selected = manifest.select(patterns)
        if patterns and not selected:
            raise CommandError(f"no case matches {', '.join(patterns)}")
        config = Config(
            endpoints={"registry": options["registry"], "repository": options["repository"],
                       "imaging-source": options["imaging_source"]},
            feed_configured=feed_client is not None, source_id=options["source_id"],
            home_community_id=options["home_community_id"], timeout=options["timeout"],
            validate_schema=not options["no_schema"], codes=codes,
            repository_unique_id=_oid(options["repository_unique_id"], "--repository-unique-id", empty_ok=True),
            imaging_source_unique_id=_oid(options["imaging_source_unique_id"], "--imaging-source-unique-id"))
        pool = PatientPool(manifest.patients, feed_client, authority=options["assigning_authority"])
        if feed_client is None:
            print("warning: no --feed-hl7/--feed-cmd: patients are not fed; the registry must accept them",
                  file=sys.stderr)
        runner = Runner(manifest, config, pool, progress=sys.stderr)
        results = runner.run(selected)
        mappings = runner.code_mappings()
        if codes is not None and options["verbosity"] >= 2:
            self.stderr.write(f"code rewrites for {codes.source} ({len(mappings)}):")
            for line in mappings:
                self.stderr.write(f"  {line}")
        report.console(results, self.stdout)
        if options["junit"]:
            output = [f"code rewrites for {codes.source}:", *mappings] if codes is not None else []
            report.junit(results, Path(options["junit"]), system_out=output)
        if any(r.verdict == FAIL for r in results):
            sys.exit(1)


_OID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")


def _oid(value: str, option: str, *, empty_ok: bool = False) -> str:
    """An ISO OID of at most 64 characters (ITI TF-3 4.2.3.1.7 repositoryUniqueId), else a usage error."""
    value = value.strip()
    if (empty_ok and not value) or (len(value) <= 64 and _OID.fullmatch(value)):
        return value
    raise CommandError(f"{option}: {value!r} is not an OID")
