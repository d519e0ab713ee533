"""``manage.py xds_patient add|list|merge``: manage the registry's patients out of band (same code as ITI-8)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from xds_core.affinity_domain import load_affinity_domain
from xds_registry.models import Patient
from xds_registry.patient_identity_feed.patients import (
    Demographics,
    PatientFeedError,
    add_or_update_patient,
    merge_patients,
)


class Command(BaseCommand):
    help = "Add, list or merge patients of the affinity domain (ids as CX: id^^^&OID&ISO)."

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="add (or update) patients")
        add.add_argument("patient_ids", nargs="+", metavar="CX")
        add.add_argument("--family", default="", help="family name")
        add.add_argument("--given", default="", help="given name")
        add.add_argument("--birth-date", default="", help="YYYYMMDD")
        add.add_argument("--sex", default="", help="M/F/O/U")
        lst = sub.add_parser("list", help="list patients")
        lst.add_argument("--search", default="", help="substring of the id or family name")
        merge = sub.add_parser("merge", help="merge MERGED into SURVIVING (as ADT^A40)")
        merge.add_argument("surviving", metavar="SURVIVING")
        merge.add_argument("merged", metavar="MERGED")

    def handle(self, *args: Any, **options: Any) -> None:
        domain = load_affinity_domain(settings.XDS_AFFINITY_DOMAIN_CODES)
        try:
            if options["action"] == "add":
                demographics = Demographics(options["family"], options["given"], options["birth_date"],
                                            options["sex"])
                for pid in options["patient_ids"]:
                    _, created = add_or_update_patient(pid, demographics, affinity_domain=domain)
                    self.stdout.write(f"{'added' if created else 'updated'} {pid}")
            elif options["action"] == "merge":
                moved = merge_patients(options["surviving"], options["merged"], affinity_domain=domain)
                self.stdout.write(f"merged {options['merged']} into {options['surviving']} "
                                  f"({moved} registry objects re-pointed)")
            else:
                patients = Patient.objects.select_related("merged_into").order_by("patient_id")
                if options["search"]:
                    from django.db.models import Q

                    patients = patients.filter(Q(patient_id__icontains=options["search"])
                                               | Q(family_name__icontains=options["search"]))
                for p in patients.iterator():
                    state = f"merged into {p.merged_into.patient_id}" if p.merged_into else "active"
                    name = " ".join(x for x in (p.given_name, p.family_name) if x)
                    self.stdout.write(f"{p.patient_id}\t{state}\t{name}\t{p.birth_date}\t{p.sex}")
        except PatientFeedError as exc:
            raise CommandError(str(exc)) from exc
