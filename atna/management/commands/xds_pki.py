"""``manage.py xds_pki issue|demo|show|list``: the demo PKI and client certificates (ITI-19, issue 13).

- ``issue --role ROLE --name NAME --out DIR``: a client certificate signed by the demo CA (``XDS_PKI_DIR``) or
  the CA in ``--ca-dir`` (``ca.crt`` + ``ca.key``); writes ``NAME.crt`` and ``NAME.key`` (0600), with ``--p12``
  also ``NAME.p12`` for a browser (its password printed once); prints the SHA-256 fingerprint and subject.
  ``--register`` adds (or, for an existing NAME, updates) this node's identity-table row with that role.
- ``demo``: create or complete the demo PKI under ``XDS_PKI_DIR`` (idempotent; see ``atna.pki_demo``).
- ``show CERT``: one certificate (a file, or a demo node / role name) and the identity rows it matches here.
- ``list``: every certificate of the PKI directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from atna.pki_demo import DEMO_NODES, CertFiles, DemoPki, ensure_demo_pki, issue_client, load_ca, register
from xds_core import pki
from xds_core.identity import PeerCertificate, Role

#: A certificate's file stem and identity-table name: the NodeIdentity.name slug (letters, digits, - and _).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise CommandError(f"--name {value!r}: letters, digits, '-' and '_' only (at most 64)")
    return value


class Command(BaseCommand):
    help = "Issue client certificates from the demo CA (or another), create the demo PKI, show certificates."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        issue = sub.add_parser("issue", help="issue a client certificate for a role")
        issue.add_argument("--role", required=True, choices=[r.value for r in Role])
        issue.add_argument("--name", required=True, help="certificate CN, file stem and identity name")
        issue.add_argument("--out", required=True, type=Path, help="directory for NAME.crt / NAME.key")
        issue.add_argument("--ca-dir", type=Path, help="directory holding ca.crt and ca.key (default XDS_PKI_DIR)")
        issue.add_argument("--days", type=int, default=pki.MAX_LIFETIME_DAYS,
                           help=f"lifetime (at most {pki.MAX_LIFETIME_DAYS}, ITI TF-2a 3.19.6.1.3)")
        issue.add_argument("--p12", action="store_true", help="also write NAME.p12 (PKCS#12) for a browser")
        issue.add_argument("--register", action="store_true",
                           help="add this certificate to this node's identity table with the role")
        issue.add_argument("--source-id", action="append", default=[], metavar="OID",
                           help="with --register: a sourceId the identity may submit under (repeatable)")
        demo = sub.add_parser("demo", help="create or complete the demo PKI under XDS_PKI_DIR")
        demo.add_argument("--node", action="append", metavar="NAME",
                          help=f"node certificates to have (default: {', '.join(DEMO_NODES)})")
        show = sub.add_parser("show", help="one certificate and the identity rows it matches")
        show.add_argument("certificate", help="a certificate file, or a demo node or role name")
        sub.add_parser("list", help="every certificate of the PKI directory")

    def handle(self, *args: Any, **options: Any) -> None:
        directory = Path(settings.XDS_PKI_DIR)
        action = options["action"]
        if action == "issue":
            self.issue(directory, options)
        elif action == "demo":
            nodes = [_name(n) for n in options["node"]] if options["node"] else list(DEMO_NODES)
            demo, issued = ensure_demo_pki(directory, nodes)
            self.stdout.write(f"demo PKI {demo.directory}: " + (f"issued {', '.join(issued)}" if issued
                                                                 else "complete, nothing issued"))
            self.list(demo)
        elif action == "show":
            self.show(self.find(directory, options["certificate"]))
        else:
            self.list(DemoPki(directory))

    def issue(self, directory: Path, options: dict[str, Any]) -> None:
        name, role = _name(options["name"]), Role(options["role"])
        if options["source_id"] and not options["register"]:
            raise CommandError("--source-id goes with --register")
        try:
            ca = load_ca(options["ca_dir"] or directory)
        except (FileNotFoundError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        try:
            issued = issue_client(ca, role, name, options["out"], days=options["days"], p12=options["p12"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"certificate {issued.files.cert}\nkey         {issued.files.key} (keep it 0600)")
        self.describe(issued.peer)
        if issued.p12_password:
            self.stdout.write(f"PKCS#12     {issued.files.p12}  password: {issued.p12_password}")
        if options["register"]:
            try:
                changed = register(name, issued.peer, [role], source_ids=options["source_id"],
                                   description=f"xds_pki issue --role {role.value}")
            except ValidationError as exc:  # a name or sourceId the table refuses
                raise CommandError(f"--register: {exc}") from None
            self.stdout.write(f"identity    {name}: role {role.value} "
                              f"({'registered' if changed else 'already registered'})")

    def find(self, directory: Path, given: str) -> CertFiles:
        path = Path(given)
        if path.is_file():
            return CertFiles(path, path.with_suffix(".key"))
        demo = DemoPki(directory)
        candidates = [demo.node(given)]
        if given in {r.value for r in Role}:
            candidates.append(demo.client(given))
        if given == "ca":
            candidates.append(demo.ca)
        for files in candidates:
            if files.cert.is_file():
                return files
        raise CommandError(f"{given}: no such certificate file, demo node or role certificate under {directory}")

    def describe(self, peer: PeerCertificate) -> None:
        after = peer.not_after.isoformat(timespec="seconds") if peer.not_after else "?"
        self.stdout.write(f"subject     {peer.subject}\nissuer      {peer.issuer}\nnot after   {after}\n"
                          f"SHA-256     {peer.colon_fingerprint}")

    def show(self, files: CertFiles) -> None:
        from atna.models import NodeIdentity

        try:
            peer = files.peer()
        except ValueError as exc:
            raise CommandError(f"{files.cert}: not a PEM certificate ({exc})") from None
        self.stdout.write(f"certificate {files.cert}")
        self.describe(peer)
        rows = list(NodeIdentity.objects.filter(cert_sha256=peer.sha256)) + list(
            NodeIdentity.objects.filter(cert_subject=peer.subject))
        for row in rows:
            self.stdout.write(f"identity    {row.name}: roles {row.roles or '-'}"
                              f"{'' if row.enabled else ' (disabled)'}")
        if not rows:
            self.stdout.write("identity    none on this node: a peer presenting it is refused")

    def list(self, demo: DemoPki) -> None:
        found = demo.all_files()
        if not found:
            self.stdout.write(f"no certificates under {demo.directory} (manage.py xds_pki demo creates them)")
        for files in found:
            peer = files.peer()
            after = peer.not_after.date().isoformat() if peer.not_after else "?"
            self.stdout.write(f"{files.cert.relative_to(demo.directory)}\t{peer.subject}\tuntil {after}\t"
                              f"{peer.sha256}")
