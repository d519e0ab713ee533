"""``manage.py xds_bench_registry_load``: load N DocumentEntries for the registry benchmark.

Every entry goes through the SAME code as ITI-42 (:func:`register_document_set`: validation,
id assignment, lifecycle checks, stored XML, indexed columns, code table), batched as one
SubmissionSet per patient carrying ``--per-submission`` documents -- only the HTTP/SOAP layer
is skipped.  Patients are registered through the identity-feed code first.

Data shape (deterministic for a given ``--seed``): patient ``i`` is
``BENCH-<run>-<i:07d>^^^&<authority>&ISO`` and receives ``--docs-per-patient`` entries with
classCode/typeCode/formatCode/... drawn from the affinity domain's value sets when one is
configured (``XDS_AFFINITY_DOMAIN_CODES``) or from a built-in set, creationTime spread over
2015-2025, 1-2 confidentiality codes and 0-3 event codes.  ``--summary FILE`` writes a JSON
description (patient ids, codes, time range, rate) for the benchmark runner.
"""

from __future__ import annotations

import gc
import json
import random
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from xds_core.affinity_domain import AffinityDomain, load_affinity_domain
from xds_core.metadata.objects import (
    Association,
    Classification,
    DocumentEntry,
    ExternalIdentifier,
    InternationalString,
    LocalizedString,
    Slot,
    Submission,
    SubmissionSet,
)
from xds_core.metadata.values import Author, Code
from xds_core.vocabulary import (
    DICOM_UID_REGISTRY,
    IDENTIFICATION_SCHEME_NAMES,
    KOS_FORMAT_CODE,
    AssociationType,
    ClassificationNode,
    ClassificationScheme,
    IdentificationScheme,
    ObjectType,
    SubmissionSetStatus,
)
from xds_registry.models import Patient
from xds_registry.register_document_set import MAX_BATCH_UNIQUE_IDS, register_document_sets

DEFAULT_AUTHORITY = "1.3.6.1.4.1.21367.2005.13.20.1000"
BUILTIN_CODES: dict[str, list[Code]] = {
    "classCode": [Code(c, "1.3.6.1.4.1.19376.1.2.6.1", c.title()) for c in
                  ("REPORTS", "IMAGES", "SUMMARY", "PLANS", "PRESCRIPTIONS", "DISPENSATIONS")],
    "typeCode": [Code(c, "2.16.840.1.113883.6.1", d) for c, d in
                 (("18748-4", "Diagnostic imaging study"), ("11369-6", "Immunization"), ("34133-9", "Summary"))],
    "formatCode": [Code(KOS_FORMAT_CODE, DICOM_UID_REGISTRY, "Key Object Selection"),
                   Code("urn:ihe:rad:TEXT", "1.3.6.1.4.1.19376.1.2.3", "Radiology text")],
    "healthcareFacilityTypeCode": [Code("264372000", "2.16.840.1.113883.6.96", "Pharmacy"),
                                   Code("22232009", "2.16.840.1.113883.6.96", "Hospital")],
    "practiceSettingCode": [Code("394914008", "2.16.840.1.113883.6.96", "Radiology"),
                            Code("394802001", "2.16.840.1.113883.6.96", "General medicine")],
    "confidentialityCode": [Code("N", "2.16.840.1.113883.5.25", "Normal"),
                            Code("R", "2.16.840.1.113883.5.25", "Restricted")],
    "eventCodeList": [Code(c, "1.2.840.10008.2.16.4", c) for c in ("CT", "MR", "US", "CR", "DX", "NM")],
    "contentTypeCode": [Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study")],
}
MIME_TYPES = ["application/dicom", "text/plain"]
SCHEMES = {
    "classCode": ClassificationScheme.DocumentEntry_classCode,
    "typeCode": ClassificationScheme.DocumentEntry_typeCode,
    "formatCode": ClassificationScheme.DocumentEntry_formatCode,
    "healthcareFacilityTypeCode": ClassificationScheme.DocumentEntry_healthcareFacilityTypeCode,
    "practiceSettingCode": ClassificationScheme.DocumentEntry_practiceSettingCode,
}


@dataclass(frozen=True)
class LoadPlan:
    run: str
    authority: str
    patients: int
    docs_per_patient: int
    per_submission: int
    seed: int
    codes: dict[str, list[tuple[str, str, str]]]  # attribute -> [(code, scheme, display)]
    mime_types: list[str]
    repository_unique_id: str
    batch: int = 1000  # entries per transaction

    def patient_id(self, index: int) -> str:
        return f"BENCH-{self.run}-{index:07d}^^^&{self.authority}&ISO"


def codes_for(domain: AffinityDomain | None) -> tuple[dict[str, list[tuple[str, str, str]]], list[str]]:
    out: dict[str, list[tuple[str, str, str]]] = {}
    for name, builtin in BUILTIN_CODES.items():
        if domain is not None and domain.constrains(name):
            out[name] = [(c.code, c.scheme, c.display or c.code) for c in domain.value_sets[name][:12]]
        else:
            out[name] = [(c.code, c.scheme, c.display_name or c.code) for c in builtin]
    mimes = MIME_TYPES
    if domain is not None and domain.constrains("mimeType"):
        mimes = [c.code for c in domain.value_sets["mimeType"] if c.code in MIME_TYPES] or \
            [domain.value_sets["mimeType"][0].code]
    return out, mimes


def _code(plan: LoadPlan, attribute: str, rng: random.Random) -> Code:
    code, scheme, display = rng.choice(plan.codes[attribute])
    return Code(code, scheme, display)


def _uuid_from(rng: random.Random) -> str:
    """A random ``urn:uuid:`` id from the loader's generator (cheaper than :func:`uuid.uuid4` per object)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"urn:uuid:{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


_TEMPLATES: dict[tuple[str, tuple[str, str, str]], Classification] = {}


def _classification(rng: random.Random, scheme: str, classified: str, code: tuple[str, str, str]) -> Classification:
    """What ``Classification.for_code`` builds, with the loader's cheap id.

    Copied from a per-code template instead of running the dataclass ``__init__`` (a dozen
    default factories; it was the largest single cost of generating the data).  The copy gets its
    own id, target and containers; the Slot and name objects are shared, which is safe because
    registration never mutates a nested Classification's slots or name.
    """
    template = _TEMPLATES.get((scheme, code))
    if template is None:
        template = _TEMPLATES[(scheme, code)] = Classification(
            classification_scheme=scheme, node_representation=code[0], slots=[Slot("codingScheme", [code[1]])],
            name=InternationalString([LocalizedString(code[2])]))
    obj = object.__new__(Classification)
    state = obj.__dict__
    state.update(template.__dict__)
    state["id"] = _uuid_from(rng)
    state["classified_object"] = classified
    state["slots"] = list(template.slots)
    state["extra_attributes"], state["extra_elements"] = {}, []
    state["classifications"], state["external_identifiers"] = [], []
    return obj


def make_submission(plan: LoadPlan, patient_id: str, first_doc: int, count: int, rng: random.Random) -> Submission:
    """One SubmissionSet with ``count`` DocumentEntries for ``patient_id`` (symbolic ids, fresh uniqueIds)."""
    ss = SubmissionSet(id="SubmissionSet", object_type=ObjectType.REGISTRY_PACKAGE.value)
    ss.set_slot("submissionTime", time.strftime("%Y%m%d%H%M%S", time.gmtime()))
    ss.classifications.append(Classification.marker(ClassificationNode.SUBMISSION_SET, ss.id))
    ss.set_codes(ClassificationScheme.SubmissionSet_contentTypeCode, [_code(plan, "contentTypeCode", rng)])
    ss.classifications.append(Classification.for_author(ClassificationScheme.SubmissionSet_author, ss.id,
                                                        Author(person="^Bench^Loader^^^")))
    ss.patient_id = patient_id
    ss.unique_id = f"2.25.{rng.getrandbits(120)}"
    ss.source_id = "1.3.6.1.4.1.21367.13.80.110"
    ss.name = InternationalString.of("benchmark load")
    submission = Submission(submission_set=ss)
    codes = plan.codes
    conf, events = codes["confidentialityCode"], codes["eventCodeList"]
    for n in range(count):
        doc_id = f"Document{n}"
        de = DocumentEntry(id=doc_id, object_type=ObjectType.STABLE_DOCUMENT_ENTRY.value,
                           mime_type=rng.choice(plan.mime_types))
        stamp = rng.getrandbits(64)
        created = f"{2015 + stamp % 11}{1 + (stamp >> 4) % 12:02d}{1 + (stamp >> 8) % 28:02d}" \
                  f"{(stamp >> 13) % 24:02d}{(stamp >> 18) % 60:02d}{(stamp >> 24) % 60:02d}"
        de.slots = [
            Slot("creationTime", [created]), Slot("languageCode", ["en-US"]),
            Slot("sourcePatientId", [patient_id]), Slot("hash", [f"{rng.getrandbits(160):040x}"]),
            Slot("size", [str(1000 + (stamp >> 30) % 4_999_000)]),
            Slot("repositoryUniqueId", [plan.repository_unique_id]),
            Slot("serviceStartTime", [created[:12]]), Slot("serviceStopTime", [created[:12]]),
            Slot("urn:ihe:iti:xds:2013:referenceIdList",
                 [f"ACC{first_doc + n}^^^&1.2.3.4.5&ISO^urn:ihe:iti:xds:2013:accession"]),
        ]
        de.name = InternationalString.of(f"Benchmark document {first_doc + n}")
        classifications = [_classification(rng, scheme, doc_id, rng.choice(codes[attribute]))
                           for attribute, scheme in SCHEMES.items()]
        classifications += [_classification(rng, ClassificationScheme.DocumentEntry_confidentialityCode, doc_id, c)
                            for c in rng.sample(conf, k=min(len(conf), 1 + (stamp >> 50) % 2))]
        classifications += [_classification(rng, ClassificationScheme.DocumentEntry_eventCodeList, doc_id, c)
                            for c in rng.sample(events, k=min(len(events), (stamp >> 52) % 4))]
        classifications.append(Classification(
            id=_uuid_from(rng), classification_scheme=ClassificationScheme.DocumentEntry_author,
            classified_object=doc_id, node_representation="",
            slots=Author(person=f"^Author{1 + (stamp >> 54) % 500}^Bench^^^",
                         institutions=["Bench Hospital"]).to_slots()))
        de.classifications = classifications
        de.external_identifiers = [
            ExternalIdentifier(id=_uuid_from(rng), identification_scheme=scheme, value=value, registry_object=doc_id,
                               name=InternationalString.of(IDENTIFICATION_SCHEME_NAMES[scheme]))
            for scheme, value in ((IdentificationScheme.DocumentEntry_patientId, patient_id),
                                  (IdentificationScheme.DocumentEntry_uniqueId, f"2.25.{rng.getrandbits(120)}"))]
        submission.document_entries.append(de)
        submission.associations.append(Association(
            id=f"Assoc{n}", association_type=AssociationType.HasMember.value, source_object=ss.id,
            target_object=doc_id, object_type=ObjectType.ASSOCIATION.value,
            slots=[Slot("SubmissionSetStatus", [SubmissionSetStatus.ORIGINAL.value])]))
    return submission


def load_patients(plan: LoadPlan, start: int, stop: int, domain: AffinityDomain | None) -> int:
    """Register patients [start, stop) and their documents; returns the number of entries loaded.

    Submissions are registered ``plan.batch`` entries at a time by :func:`register_document_sets`:
    the ITI-42 validation and persistence code, one transaction (and a few statements) per batch.
    """
    rng = random.Random(f"{plan.run}:{plan.seed}:{start}")  # uniqueIds differ between runs
    Patient.objects.bulk_create(
        [Patient(patient_id=plan.patient_id(i), assigning_authority=plan.authority, family_name=f"Bench{i}")
         for i in range(start, stop)], ignore_conflicts=True, batch_size=1000)
    loaded = 0
    pending: list[Submission] = []
    pending_entries = 0

    def flush() -> None:
        nonlocal loaded, pending, pending_entries
        register_document_sets(pending, affinity_domain=domain)
        loaded += pending_entries
        pending, pending_entries = [], 0
        gc.collect()

    # A batch is hundreds of thousands of small objects without reference cycles: the cyclic
    # collector would rescan the growing batch every few hundred allocations (it tripled the cost
    # of building the submissions).  Collect once per batch instead, when the batch is released.
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(start, stop):
            pid = plan.patient_id(i)
            done = 0
            while done < plan.docs_per_patient:
                count = min(plan.per_submission, plan.docs_per_patient - done)
                # uniqueIds of the batch so far (entries + one per SubmissionSet) plus this submission's.
                if pending and pending_entries + len(pending) + count + 1 > MAX_BATCH_UNIQUE_IDS:
                    flush()
                pending.append(make_submission(plan, pid, i * plan.docs_per_patient + done, count, rng))
                pending_entries += count
                done += count
                if pending_entries >= plan.batch:
                    flush()
        if pending:
            flush()
    finally:
        if gc_enabled:
            gc.enable()
    return loaded


def _worker(plan: LoadPlan, start: int, stop: int, codes_file: str) -> int:
    connections.close_all()
    return load_patients(plan, start, stop, load_affinity_domain(codes_file))


class Command(BaseCommand):
    help = "Load N DocumentEntries through the ITI-42 validation and persistence code (registry benchmark)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--entries", type=int, default=100_000, help="DocumentEntries to load (default 100000)")
        parser.add_argument("--docs-per-patient", type=int, default=20, help="entries per patient (default 20)")
        parser.add_argument("--per-submission", type=int, default=10,
                            help="entries per SubmissionSet (batching; default 10)")
        parser.add_argument("--batch", type=int, default=1000,
                            help="entries registered per transaction (default 1000; fewer when a transaction would "
                                 "lock more than 2000 uniqueIds)")
        parser.add_argument("--workers", type=int, default=1, help="parallel loader processes (default 1)")
        parser.add_argument("--authority", default="", help="assigning authority OID of the patient ids "
                            f"(default: first of the affinity domain, else {DEFAULT_AUTHORITY})")
        parser.add_argument("--run", default="", help="run tag inside patient ids (default: a timestamp)")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--summary", default="", help="write a JSON summary to this file")

    def handle(self, *args: Any, **options: Any) -> None:
        entries, per_patient = options["entries"], options["docs_per_patient"]
        if entries < 1 or per_patient < 1 or options["per_submission"] < 1 or options["workers"] < 1 \
                or options["batch"] < 1:
            raise CommandError("--entries, --docs-per-patient, --per-submission, --batch and --workers must be >= 1")
        codes_file = settings.XDS_AFFINITY_DOMAIN_CODES
        domain = load_affinity_domain(codes_file)
        authority = options["authority"] or (sorted(domain.assigning_authorities)[0]
                                             if domain and domain.assigning_authorities else DEFAULT_AUTHORITY)
        codes, mimes = codes_for(domain)
        patients = -(-entries // per_patient)
        plan = LoadPlan(run=options["run"] or time.strftime("%m%d%H%M%S"), authority=authority, patients=patients,
                        docs_per_patient=per_patient, per_submission=options["per_submission"], seed=options["seed"],
                        codes=codes, mime_types=mimes, repository_unique_id=settings.XDS_REPOSITORY_UNIQUE_ID,
                        batch=options["batch"])
        self.stdout.write(f"loading {patients * per_patient} entries for {patients} patients "
                          f"({per_patient}/patient, {plan.per_submission}/submission, {options['workers']} worker(s))")
        started = time.monotonic()
        loaded = 0
        chunk = max(1, min(500, patients // (options["workers"] * 8) or 1))
        ranges = [(s, min(s + chunk, patients)) for s in range(0, patients, chunk)]

        def progress(n: int) -> None:
            nonlocal loaded
            loaded += n
            elapsed = time.monotonic() - started
            self.stdout.write(f"  {loaded:>9} entries  {elapsed:8.1f} s  {loaded / elapsed:8.0f} entries/s")
            self.stdout.flush()

        if options["workers"] == 1:
            for start, stop in ranges:
                progress(load_patients(plan, start, stop, domain))
        else:
            connections.close_all()
            with ProcessPoolExecutor(options["workers"]) as pool:
                futures = [pool.submit(_worker, plan, s, e, codes_file) for s, e in ranges]
                for future in as_completed(futures):
                    progress(future.result())
        elapsed = time.monotonic() - started
        summary = {
            "entries": loaded, "patients": patients, "docs_per_patient": per_patient,
            "per_submission": plan.per_submission, "workers": options["workers"], "seconds": round(elapsed, 2),
            "entries_per_second": round(loaded / elapsed, 1) if elapsed else None,
            "patient_id_format": plan.patient_id(0).replace("0000000", "{index:07d}"),
            "sample_patient_ids": [plan.patient_id(i) for i in range(min(patients, 100))],
            "codes": {k: [f"{c}^^{s}" for c, s, _ in v] for k, v in codes.items()},
            "creation_time_range": ["20150101000000", "20251231235959"],
        }
        if options["summary"]:
            Path(options["summary"]).parent.mkdir(parents=True, exist_ok=True)
            Path(options["summary"]).write_text(json.dumps(summary, indent=2))
        self.stdout.write(f"loaded {loaded} entries in {elapsed:.1f} s ({summary['entries_per_second']} entries/s)")
