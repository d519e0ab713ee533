"""``manage.py xds_demo_load domain|hospital-a|hospital-b``: put a demo site's data in place (``make run``).

Run with the site's environment (``XDS_ENV_FILE=var/demo/<site>.env``), after its services are up:

- ``domain``: the affinity domain's patients, as its Patient Identity Source would feed them (the same
  code as ITI-8);
- a hospital: its consumer's endpoint directory (``--endpoints FILE``), its local -> affinity patient
  mappings, its demo studies into its own PACS (STOW-RS, skipped when the PACS already holds them), then
  each study published through the real RAD-68 path to the domain's repository (an unchanged study is
  not sent again, so a warm start costs a few queries).

Its output is ``make run``'s log: the sub-commands' lines naming patients and studies are kept out of it
(issue 13: no patient data in operational logs), only counts are written; failures still go to stderr.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from atna.tls import new_http_session
from demo.sites import HOSPITALS
from demo.studies import PATIENTS, DemoStudy, affinity_cx, instances, records_of, stow_body, studies_of


class Command(BaseCommand):
    help = "Load a demo site's data: patients (domain) or endpoints, mappings, studies and RAD-68 (hospital)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("site", choices=["domain", *(h.key for h in HOSPITALS)])
        parser.add_argument("--endpoints", type=Path, help="endpoint directory file (hospitals)")

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        site = options["site"]
        self.portal_users()
        if site == "domain":
            for patient in PATIENTS:
                call_command("xds_patient", "add", affinity_cx(patient.affinity_id), "--family", patient.family,
                             "--given", patient.given, "--birth-date", patient.birth_date, "--sex", patient.sex,
                             stdout=io.StringIO(), stderr=self.stderr)
            self.stdout.write(f"demo domain: {len(PATIENTS)} patients in {time.monotonic() - started:.1f}s")
            return
        if options["endpoints"]:
            call_command("xds_endpoints", "load", str(options["endpoints"]), stdout=self.stdout)
        for record in records_of(site):
            call_command("xds_patient_map", "set", record.local_id, affinity_cx(record.patient.affinity_id),
                         "--issuer", record.issuer, "--note", "demo", stdout=io.StringIO())
        studies = studies_of(site)
        with new_http_session() as session:
            for study in studies:
                self.upload(session, study)
        call_command("xds_publish", study=[s.study_instance_uid for s in studies], trigger="command",
                     stdout=io.StringIO(), stderr=self.stderr)
        self.stdout.write(f"demo {site}: {len(studies)} studies in its PACS and published "
                          f"in {time.monotonic() - started:.1f}s")

    def portal_users(self) -> None:
        """Every site's portal knows both hospitals and has the demo users: ``clinician-a`` (Hospital A),
        ``clinician-b`` (Hospital B) and ``admin`` (superuser; of the site's own hospital on a hospital node).
        Their password is ``DEMO_PASSWORD`` when set (the supervisor generates one at first start); without
        it, users that exist keep theirs."""
        password = ["--password-env", "DEMO_PASSWORD"] if os.environ.get("DEMO_PASSWORD") else []
        for hospital in HOSPITALS:
            call_command("xds_portal_user", "add", f"clinician-{hospital.letter.lower()}", "--hospital",
                         hospital.key, "--hospital-name", hospital.title, *password, stdout=self.stdout)
        own = next((h for h in HOSPITALS if h.key == settings.XDS_SITE_KEY), None)
        membership = ["--hospital", own.key, "--hospital-name", own.title] if own else []
        call_command("xds_portal_user", "add", "admin", *membership, "--superuser", *password, stdout=self.stdout)

    def upload(self, session: requests.Session, study: DemoStudy) -> None:
        """STOW-RS the study into this site's PACS unless it holds every instance already (QIDO-RS).

        Under XDS_TLS the PACS is HTTPS and wants our node certificate: the node's own session presents it."""
        base = settings.DICOMWEB_URL
        if not base:
            raise CommandError("DICOMWEB_URL is empty: the demo loads its studies by STOW-RS")
        parts = list(instances(study))
        uid = study.study_instance_uid
        answer = session.get(f"{base}/studies", params={"StudyInstanceUID": uid,
                                                         "includefield": "00201208"}, timeout=30)
        answer.raise_for_status()
        found = answer.json() if answer.content else []
        held = int(found[0].get("00201208", {}).get("Value", [0])[0]) if found else 0
        if held >= len(parts):
            return
        body, content_type = stow_body(parts)
        stored = session.post(f"{base}/studies", data=body, timeout=120,
                               headers={"Content-Type": content_type, "Accept": "application/dicom+json"})
        if stored.status_code not in (200, 202):
            raise CommandError(f"STOW-RS of demo study {uid} answered HTTP {stored.status_code}")
