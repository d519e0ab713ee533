"""manage.py xds_bench_portal: Hospital B's web portal against the issue's performance goals.

``make bench-portal`` runs it as Hospital B (``XDS_ENV_FILE=var/demo/hospital-b.env``) against the running
demo affinity domain (``make run``), the way ``make bench-consumer`` does.  It logs in to B's portal over
real HTTP (``requests.Session``: GET /login/, the CSRF cookie ``xds_csrf_<port>``, POST) as
``--username`` (clinician-b) with the demo users' password ``DEMO_PASSWORD`` (required).  Hospital A's
settings come from its env file (``--site-a-env``, default: next to this site's ``XDS_ENV_FILE``), the
domain's ITI-8 port from ``domain.env`` beside it.

Server time = the ``Server-Timing: app;dur=<ms>`` header of :class:`portal.middleware.ServerTimingMiddleware`;
a node without it in ``MIDDLEWARE`` is measured by the client's wall time instead (said so in the output).

Seeding (idempotent: a rerun finds what an earlier run left and reuses it):

* bench patient ``PORTAL-BENCH-200`` of the affinity domain, fed by ITI-8 (HL7 v2.5 ADT^A04 over MLLP to
  the domain's HL7 port), then ``--documents`` (200) DocumentEntries registered by ITI-42 over HTTP in
  submission sets of 20 (the registry benchmark's generator, sourceIds of Hospital A and B alternating);
  skipped when ITI-18 (FindDocuments, ObjectRef) already counts as many for the patient;
* a 500-instance study (4 series of CT_small copies, UIDs derived from a fixed seed) of Hospital A's
  patient A-1002 (affinity DEMO-1002) STOWed into Orthanc A unless it already holds all 500, and
  published by Hospital A (``manage.py xds_publish --study`` with A's env file) unless the registry
  already has its manifest.

Figures (each beside its goal, and in ``var/bench/portal.json``):

1. patient page (portal:patient) of the bench patient: server time p50/p95 over ``--requests`` GETs (goal
   p95 < 100 ms);
2. manifest page (portal:manifest) of the 500-instance study after one fetch of every thumbnail on it:
   server time p50/p95 (goal p95 < 100 ms);
3. first thumbnail, end to end (informative): the study's ThumbnailCache rows deleted from B's database,
   then the time from the manifest page request to the first thumbnail PNG received, ``--cold-runs`` times;
4. ``imaging_source.rendering.render_thumbnail`` of a generated 512x512 16-bit CT, ``--renders`` times,
   in this process (goal p95 < 150 ms);
5. ITI-18 FindDocuments of the bench patient (LeafClass, 200 entries) against the domain registry, alone
   and then while two threads download the study's zip (portal:download) and one import (portal:import,
   the job polled on portal:import_status) runs (goal p99 < 1 s under load), with the zip throughput.

The study copy the import puts in Orthanc B is removed afterwards; the study stays in Orthanc A and its
manifest in the registry for the next run.
"""

from __future__ import annotations

import io
import json
import math
import os
import platform
import random
import re
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import numpy as np
import pydicom
import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from atna.tls import node_client_context
from conformance.patients import FeedError, check_ack
from consumer.find import FindError, FindQuery, find_manifests
from consumer.management.commands.xds_bench_consumer import (
    Goal,
    check_demo_running,
    format_table,
    orthanc_instance_count,
    orthanc_remove,
    publish_at_site,
    read_env_file,
    stow,
)
from xds_core import mllp
from xds_core.affinity_domain import load_affinity_domain
from xds_core.ebxml.serialize import adhoc_query_request, submit_objects_request
from xds_core.metadata.values import CX
from xds_core.vocabulary import Action, AvailabilityStatus, QueryParameter, ReturnType, StoredQuery
from xds_registry.management.commands.xds_bench_registry import SUCCESS, Prepared, soap_message
from xds_registry.management.commands.xds_bench_registry_load import LoadPlan, codes_for, make_submission

GOAL_PAGE_P95_MS = 100.0
GOAL_RENDER_P95_MS = 150.0
GOAL_ITI18_P99_MS = 1000.0

BENCH_PATIENT_ID = "PORTAL-BENCH-200"
BENCH_FAMILY, BENCH_GIVEN = "Bench", "Portal"
PER_SUBMISSION = 20
#: The 500-instance study: Hospital A's local patient A-1002 = affinity patient DEMO-1002 (demo/studies.py).
STUDY_PATIENT_ID = "DEMO-1002"
STUDY_LOCAL_ID = "A-1002"
STUDY_PATIENT_NAME = "Demo^Alice"
STUDY_SEED = "xdsi-portal-bench-v1"
STUDY_DATE = "20260101"
STUDY_SERIES = 4
MB = 1_000_000
#: Import job states shown in #import-state (portal DOM contract); the last two end the job.
IMPORT_DONE, IMPORT_FAILED = "done", "failed"
RENDER_SIDE = 512
#: The End of Central Directory record is in the last 22 + 65535 (comment) bytes of a zip.
ZIP_TAIL = 22 + 65535
#: The import form's field for this hospital's own id of the patient (portal.views.manifests).
LOCAL_PATIENT_FIELD = "local_patient_id"
#: Hospital B's id of DEMO-1002 the import files the study under (B-1003 is another patient, DEMO-1003).
DEFAULT_LOCAL_PATIENT = "B-1002"
RIM_OBJECT_REF = re.compile(rb"<(?:[\w.-]+:)?ObjectRef[\s/>]")
SERVER_TIMING_APP = re.compile(r"(?:^|,)\s*app\s*;(?:[^,]*?;)?\s*dur\s*=\s*\"?(\d+(?:\.\d+)?)\"?", re.IGNORECASE)


# ============================================================================ pure helpers

def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) of ``values``, linear between the closest ranks (numpy's default);
    NaN for no values."""
    if not values:
        return math.nan
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"a quantile is between 0 and 1, not {fraction}")
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values_ms: list[float]) -> dict[str, Any]:
    """n, p50, p95, p99, mean, max (ms, rounded to 0.1 ms) of a list of durations in ms."""
    if not values_ms:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    return {"n": len(values_ms), "p50_ms": round(percentile(values_ms, 0.50), 1),
            "p95_ms": round(percentile(values_ms, 0.95), 1), "p99_ms": round(percentile(values_ms, 0.99), 1),
            "mean_ms": round(statistics.fmean(values_ms), 1), "max_ms": round(max(values_ms), 1)}


def server_time_ms(header: str | None) -> float | None:
    """The ``app`` metric's ``dur`` of a ``Server-Timing`` header value (ms), or None."""
    if not header:
        return None
    found = SERVER_TIMING_APP.search(header)
    return float(found.group(1)) if found else None


def documents_to_register(existing: int, wanted: int) -> int:
    """How many more entries the bench patient needs (none when the registry already holds ``wanted``)."""
    if wanted < 1:
        raise ValueError("the patient page benchmark needs at least one document")
    if existing < 0:
        raise ValueError(f"a registry cannot hold {existing} documents")
    return max(0, wanted - existing)


def submission_sizes(count: int, per_submission: int = PER_SUBMISSION) -> list[int]:
    """``count`` entries as submission sets of ``per_submission`` (the last one smaller)."""
    if per_submission < 1:
        raise ValueError("a submission set holds at least one document")
    return [min(per_submission, count - start) for start in range(0, max(0, count), per_submission)]


def patient_cx(patient_id: str, authority: str) -> str:
    """``id^^^&authority&ISO``; ValueError (in words) for an id or authority a registry would refuse."""
    value = f"{patient_id}^^^&{authority}&ISO"
    problems = CX.problems(value)
    if "'" in value:  # stored query values are written between single quotes (ITI TF-2a 3.18.4.1.2.3.5)
        problems.append("a quote cannot be part of a stored query value")
    if problems:
        raise ValueError(f"bench patient {value!r}: {'; '.join(problems)}")
    return value


def count_object_refs(body: bytes) -> int:
    """ObjectRef elements of an ITI-18 answer asked with returnType ObjectRef."""
    return len(RIM_OBJECT_REF.findall(body))


def adt_a04(patient: str, family: str, given: str, control_id: str, now: datetime | None = None) -> bytes:
    """ITI-8 Patient Identity Feed (ITI TF-2a 3.8.4.1): HL7 v2.5 ADT^A04 registering ``patient`` (CX)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    segments = [f"MSH|^~\\&|XDS_BENCH|PORTAL|XDS_REGISTRY|AFFINITY|{stamp}||ADT^A04^ADT_A01|{control_id}|P|2.5",
                f"EVN|A04|{stamp}", f"PID|1||{patient}||{family}^{given}^^^^^L||19700101|U", "PV1|1|O"]
    return ("\r".join(segments) + "\r").encode("utf-8")


def csrf_cookie_name(port: int) -> str:
    """The portal's per-port CSRF cookie (config/settings.py CSRF_COOKIE_NAME)."""
    return f"xds_csrf_{port}"


def study_uids(seed: str, instances: int, series: int) -> tuple[str, list[str], list[str]]:
    """(Study, Series, SOP Instance UIDs) derived from ``seed``: the same on every run."""
    if instances < 1 or series < 1 or series > instances:
        raise ValueError("a study needs at least one instance per series")
    study = generate_uid(entropy_srcs=[seed, "study"])
    return (study, [generate_uid(entropy_srcs=[seed, "series", str(i)]) for i in range(series)],
            [generate_uid(entropy_srcs=[seed, "instance", str(i)]) for i in range(instances)])


def series_of(index: int, instances: int, series: int) -> int:
    """The series (0-based) instance ``index`` falls in: consecutive, as equal as possible."""
    return index * series // instances


@dataclass
class PageFacts:
    """What the benchmark reads from a portal page (the DOM contract of the issue's portal brief)."""

    manifest_links: list[str] = field(default_factory=list)
    thumbnails: list[str] = field(default_factory=list)
    download: str | None = None
    import_action: str | None = None
    import_fields: dict[str, str] = field(default_factory=dict)
    import_state: str | None = None
    document_rows: int = 0
    error_boxes: list[str] = field(default_factory=list)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.facts = PageFacts()
        self._in_import_form = False
        self._capture: str | None = None  # "state" or "error"
        self._depth = 0
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        classes = a.get("class", "").split()
        if self._capture is not None:
            self._depth += 1
        if tag == "a" and "manifest-link" in classes and a.get("href"):
            self.facts.manifest_links.append(a["href"])
        elif tag == "a" and a.get("id") == "download-zip" and a.get("href"):
            self.facts.download = a["href"]
        elif tag == "img" and "thumbnail" in classes and a.get("src"):
            self.facts.thumbnails.append(a["src"])
        elif tag == "tr" and "document" in classes:
            self.facts.document_rows += 1
        elif tag == "form" and a.get("id") == "import-form":
            self._in_import_form = True
            self.facts.import_action = a.get("action", "")
        elif tag in ("input", "button") and self._in_import_form and a.get("name"):
            if a.get("type", "").lower() not in ("checkbox", "radio") or "checked" in a:
                self.facts.import_fields[a["name"]] = a.get("value", "")
        if self._capture is None and (a.get("id") == "import-state" or "error-box" in classes):
            self._capture, self._depth, self._text = ("state" if a.get("id") == "import-state" else "error"), 0, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_import_form = False
        if self._capture is not None:
            if self._depth == 0:
                text = " ".join("".join(self._text).split())
                if self._capture == "state":
                    self.facts.import_state = text.lower()
                else:
                    self.facts.error_boxes.append(text)
                self._capture = None
            else:
                self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._capture is not None:
            self._text.append(data)


def page_facts(html: str) -> PageFacts:
    """Manifest links, thumbnails, the zip link, the import form, the import state and error boxes of a page."""
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser.facts


def import_fields(form: dict[str, str], local_patient: str) -> dict[str, str]:
    """The import form's fields, with Hospital B's local patient id filled in when the page asks for one
    (a patient B has not mapped yet); a value the page already gives is kept."""
    fields = dict(form)
    if not fields.get(LOCAL_PATIENT_FIELD):
        fields[LOCAL_PATIENT_FIELD] = local_patient
    return fields


def zip_complete(tail: bytes) -> bool:
    """Whether the last bytes of a zip hold its End of Central Directory record (APPNOTE 4.3.16): the
    stream ran to its end rather than being cut."""
    return b"PK\x05\x06" in tail[-ZIP_TAIL:]


def mb_per_s(size: int, seconds: float) -> float:
    return round(size / seconds / MB, 1) if seconds > 0 else math.nan


# ============================================================================ generated DICOM

def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def portal_study(issuer: str, instances: int, series: int = STUDY_SERIES, seed: str = STUDY_SEED
                 ) -> tuple[str, list[str], list[str], Iterator[bytes]]:
    """(Study UID, Series UIDs, SOP Instance UIDs, Part 10 generator) of the manifest page's study: copies of
    pydicom's CT_small (128x128, 16 bit) of patient A-1002, in ``series`` series."""
    study, series_uids, sop_uids = study_uids(seed, instances, series)

    def generate() -> Iterator[bytes]:
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = STUDY_LOCAL_ID, issuer, STUDY_PATIENT_NAME
        ds.PatientBirthDate, ds.PatientSex = "19751122", "F"
        ds.StudyInstanceUID, ds.AccessionNumber = study, "BENCH-PORTAL"
        ds.StudyDescription = f"Portal benchmark ({instances} instances)"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = STUDY_DATE
        for index, sop in enumerate(sop_uids):
            number = series_of(index, instances, series)
            ds.SeriesInstanceUID, ds.SeriesNumber = series_uids[number], number + 1
            ds.SeriesDescription = f"Bench series {number + 1}"
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.InstanceNumber = index + 1
            yield _part10(ds)
    return study, series_uids, sop_uids, generate()


def ct_512() -> bytes:
    """One 512x512 CT slice, 16 bits allocated (12 stored), a phantom plus noise: a real CT's size."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Columns = RENDER_SIDE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    y, x = np.mgrid[0:RENDER_SIDE, 0:RENDER_SIDE].astype(np.float32)
    r = np.hypot(x - 256, y - 256)
    phantom = np.where(r < 220, 1000 + 600 * np.cos(r / 11), 24)
    noise = np.random.default_rng(5).integers(0, 16, phantom.shape)
    ds.PixelData = (phantom + noise).astype(np.uint16).tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return _part10(ds)


# ============================================================================ HTTP helpers

@dataclass
class Timed:
    """One GET: server time from Server-Timing (None without the header), client wall time, the answer."""

    server_ms: float | None
    client_ms: float
    status: int
    text: str


class Portal:
    """Hospital B's portal over real HTTP, logged in as one user."""

    def __init__(self, base: str, timeout: float) -> None:
        self.base = base.rstrip("/")
        self.port = urlsplit(self.base).port or 80
        self.timeout = timeout
        self.session = requests.Session()

    def clone(self) -> Portal:
        """The same login on a session of its own (a requests.Session is not shared between threads)."""
        twin = Portal(self.base, self.timeout)
        twin.session.cookies.update(self.session.cookies)
        return twin

    def url(self, path: str) -> str:
        return urljoin(self.base + "/", path)

    def csrf(self) -> str:
        token = self.session.cookies.get(csrf_cookie_name(self.port))
        if not token:
            raise CommandError(f"no CSRF cookie {csrf_cookie_name(self.port)} from {self.base}: "
                               "is this Hospital B's portal?")
        return token

    def login(self, username: str, password: str) -> None:
        login = self.url("/login/")
        try:
            page = self.session.get(login, timeout=self.timeout)
        except requests.RequestException as exc:
            raise CommandError(f"Hospital B's portal at {self.base} does not answer ({exc}): `make run`") from exc
        if page.status_code != 200:
            raise CommandError(f"GET {login}: HTTP {page.status_code}")
        answer = self.session.post(login, data={"username": username, "password": password,
                                                "csrfmiddlewaretoken": self.csrf()},
                                   headers={"Referer": login}, allow_redirects=False, timeout=self.timeout)
        target = answer.headers.get("Location", "")
        if answer.status_code != 302 or urlsplit(target).path.rstrip("/").endswith("/login"):
            raise CommandError(f"cannot log in to {self.base} as {username} (HTTP {answer.status_code}): wrong "
                               "DEMO_PASSWORD, or the demo users were created with another one")

    def get(self, path: str, **kwargs: Any) -> Timed:
        started = time.perf_counter()
        # Not streamed: requests has read the whole body when get() returns, so the client time includes it.
        response = self.session.get(self.url(path), timeout=self.timeout, **kwargs)
        client = (time.perf_counter() - started) * 1000.0
        text = response.text if response.headers.get("Content-Type", "").startswith("text/") else ""  # pages only
        return Timed(server_time_ms(response.headers.get("Server-Timing")), client, response.status_code, text)

    def post_form(self, path: str, fields: dict[str, str]) -> requests.Response:
        data = {**fields, "csrfmiddlewaretoken": self.csrf()}
        return self.session.post(self.url(path), data=data, headers={"Referer": self.url(path)},
                                 allow_redirects=False, timeout=self.timeout)


def registry_post(session: requests.Session, url: str, message: Prepared, timeout: float) -> bytes:
    response = session.post(url, data=message.body, headers={"Content-Type": message.content_type}, timeout=timeout)
    if response.status_code != 200 or SUCCESS not in response.content:
        raise CommandError(f"{url}: HTTP {response.status_code} {response.text[:400]}")
    return response.content


def find_documents(patient: str, return_type: ReturnType) -> Prepared:
    """ITI-18 FindDocuments (ITI TF-2a 3.18.4.1.2.3.7.1): the patient's Approved entries."""
    return soap_message(Action.RegistryStoredQuery, adhoc_query_request(
        StoredQuery.FindDocuments.value,
        [("$XDSDocumentEntryPatientId", [f"'{patient}'"]),
         (QueryParameter.DE_STATUS, [f"('{AvailabilityStatus.APPROVED.value}')"])], return_type=return_type))


# ============================================================================ the command

@dataclass
class Sites:
    portal: str
    registry: str
    hl7: tuple[str, int]
    a_dicomweb: str
    a_issuer: str
    a_env_file: Path
    a_source_id: str
    b_source_id: str
    b_dicomweb: str
    format_codes: tuple[str, ...]


@dataclass
class StudyLoad:
    study: str
    series: list[str]
    sops: list[str]
    repository: str
    document: str
    figures: dict[str, Any]


def _default_site_dir() -> Path:
    env_file = os.environ.get("XDS_ENV_FILE", "")
    return Path(env_file).resolve().parent if env_file else Path(settings.BASE_DIR) / "var" / "demo"


class Command(BaseCommand):
    help = "Benchmark Hospital B's web portal against the issue's goals (make bench-portal; needs `make run`)."

    def add_arguments(self, parser: CommandParser) -> None:
        site_dir = _default_site_dir()
        parser.add_argument("--requests", type=int, default=100, help="timed GETs per page (after --warmup)")
        parser.add_argument("--warmup", type=int, default=5, help="untimed GETs per page first")
        parser.add_argument("--documents", type=int, default=200, help="documents of the bench patient")
        parser.add_argument("--instances", type=int, default=500, help="instances of the manifest page's study")
        parser.add_argument("--renders", type=int, default=30, help="thumbnail renders of the 512x512 CT")
        parser.add_argument("--cold-runs", type=int, default=3, help="first-thumbnail measurements (cache cleared)")
        parser.add_argument("--iti18-idle", type=int, default=50, help="ITI-18 queries with nothing else running")
        parser.add_argument("--load-seconds", type=float, default=20.0,
                            help="least duration of the zip + import load (zips are repeated until then)")
        parser.add_argument("--username", default="clinician-b", help="Hospital B's demo clinician")
        parser.add_argument("--local-patient", default=DEFAULT_LOCAL_PATIENT,
                            help="Hospital B's id the import files the study under, when B has no mapping for it")
        parser.add_argument("--portal-url", default=f"http://127.0.0.1:{settings.PORT}",
                            help="Hospital B's portal (default: this site's PORT)")
        parser.add_argument("--site-a-env", type=Path, default=site_dir / "hospital-a.env",
                            help="Hospital A's env file (KEY=VALUE), written by `make run`")
        parser.add_argument("--domain-env", type=Path, default=site_dir / "domain.env",
                            help="the domain node's env file (its HL7_PORT: the ITI-8 feed)")
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
        parser.add_argument("--output", type=Path, default=Path(settings.BASE_DIR) / "var" / "bench" / "portal.json")

    # ------------------------------------------------------------------ plumbing

    def say(self, message: str) -> None:
        self.stdout.write(f"[{time.perf_counter() - self.t0:6.1f}s] {message}")
        self.stdout.flush()

    def sites(self, options: dict[str, Any]) -> Sites:
        a = read_env_file(options["site_a_env"], ("DICOMWEB_URL", "XDS_IMAGING_SOURCE_ID",
                                                  "XDS_IMAGING_SOURCE_PATIENT_AUTHORITY"))
        domain = read_env_file(options["domain_env"], ("HL7_PORT",))
        if not settings.DICOMWEB_URL or not settings.XDS_CONSUMER_REGISTRY_URL:
            raise CommandError("this site has no DICOMWEB_URL or XDS_CONSUMER_REGISTRY_URL: run as Hospital B "
                               "(XDS_ENV_FILE=var/demo/hospital-b.env)")
        registry = settings.XDS_CONSUMER_REGISTRY_URL
        return Sites(portal=options["portal_url"], registry=registry,
                     hl7=(urlsplit(registry).hostname or "127.0.0.1", int(domain["HL7_PORT"])),
                     a_dicomweb=a["DICOMWEB_URL"].rstrip("/"), a_issuer=a["XDS_IMAGING_SOURCE_PATIENT_AUTHORITY"],
                     a_env_file=options["site_a_env"], a_source_id=a["XDS_IMAGING_SOURCE_ID"],
                     b_source_id=settings.XDS_IMAGING_SOURCE_ID, b_dicomweb=settings.DICOMWEB_URL.rstrip("/"),
                     format_codes=tuple(settings.XDS_CONSUMER_KOS_FORMAT_CODES))

    def timed_pages(self, portal: Portal, label: str, path: str, options: dict[str, Any]) -> dict[str, Any]:
        """--warmup untimed and --requests timed GETs of ``path``: server and client time summaries."""
        for _ in range(options["warmup"]):
            self.check_page(label, portal.get(path))
        server: list[float] = []
        client: list[float] = []
        last = time.perf_counter()
        text = ""
        for i in range(options["requests"]):
            timed = self.check_page(label, portal.get(path))
            text = timed.text
            client.append(timed.client_ms)
            if timed.server_ms is not None:
                server.append(timed.server_ms)
            if time.perf_counter() - last >= 5:
                last = time.perf_counter()
                self.say(f"[{label}]   {i + 1}/{options['requests']} GETs")
        has_header = len(server) == len(client)
        figures = {"path": path, "server": summary(server) if has_header else None, "client": summary(client),
                   "time_source": "server (Server-Timing app;dur)" if has_header else
                   "client wall time: no Server-Timing header (portal.middleware.ServerTimingMiddleware not in "
                   "MIDDLEWARE)"}
        facts = page_facts(text)
        figures.update(page_bytes=len(text.encode()), document_rows_on_page=facts.document_rows,
                       thumbnails_on_page=len(facts.thumbnails), error_boxes=facts.error_boxes[:3])
        judged = figures["server"] or figures["client"]
        figures["judged"] = judged
        self.say(f"[{label}] {judged['n']} GETs, {'server' if has_header else 'CLIENT WALL'} time p50 "
                 f"{judged['p50_ms']} ms, p95 {judged['p95_ms']} ms (client p50 {figures['client']['p50_ms']} ms, "
                 f"p95 {figures['client']['p95_ms']} ms)")
        return figures

    @staticmethod
    def check_page(label: str, timed: Timed) -> Timed:
        if timed.status != 200:
            errors = page_facts(timed.text).error_boxes if timed.text else []
            raise CommandError(f"{label}: HTTP {timed.status}{': ' + errors[0] if errors else ''}")
        return timed

    # ------------------------------------------------------------------ main

    def handle(self, *args: Any, **options: Any) -> None:
        self.t0 = time.perf_counter()
        load_before = os.getloadavg()[0]
        for name in ("requests", "documents", "instances", "renders", "cold_runs", "iti18_idle"):
            if options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be positive")
        if options["warmup"] < 0 or options["load_seconds"] < 0:
            raise CommandError("--warmup and --load-seconds must not be negative")
        if options["instances"] < STUDY_SERIES:
            raise CommandError(f"--instances must be at least {STUDY_SERIES} (one per series)")
        password = settings.DEMO_PASSWORD or os.environ.get("DEMO_PASSWORD", "")
        if not password:
            raise CommandError("DEMO_PASSWORD is not set: the benchmark logs in to Hospital B's portal as the demo "
                               "clinician with the password `make run` was given (DEMO_PASSWORD=... make bench-portal)")
        try:
            bench_patient = patient_cx(BENCH_PATIENT_ID, settings.XDS_AFFINITY_DOMAIN_AUTHORITY)
            study_patient = patient_cx(STUDY_PATIENT_ID, settings.XDS_AFFINITY_DOMAIN_AUTHORITY)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        sites = self.sites(options)
        check_demo_running(sites.registry, sites.a_dicomweb, sites.b_dicomweb)
        portal = Portal(sites.portal, options["timeout"])
        portal.login(options["username"], password)
        self.say(f"logged in to Hospital B's portal {sites.portal} as {options['username']}; registry "
                 f"{sites.registry}; Orthanc A {sites.a_dicomweb}; Orthanc B {sites.b_dicomweb}")
        figures: dict[str, Any] = {"benchmark": "portal", "requests": options["requests"],
                                   "sites": {"portal": sites.portal, "registry": sites.registry,
                                             "orthanc_a": sites.a_dicomweb, "orthanc_b": sites.b_dicomweb}}
        try:
            figures["seed_patient"] = self.seed_patient(sites, bench_patient, options)
            load = self.seed_study(sites, study_patient, options)
            figures["seed_study"] = load.figures
            figures["patient_page"] = self.timed_pages(
                portal, "patient page", "/patient/?id=" + quote(bench_patient, safe=""), options)
            figures["patient_page"]["documents_in_registry"] = figures["seed_patient"]["documents_after"]
            manifest_path = f"/manifests/{load.repository}/{load.document}/"
            figures["manifest_page"] = self.manifest_page(portal, manifest_path, options)
            figures["first_thumbnail"] = self.first_thumbnail(portal, manifest_path, load, options)
            figures["render"] = self.render(options)
            figures["iti18_under_load"] = self.iti18_under_load(portal, sites, bench_patient, manifest_path, load,
                                                                options)
        except requests.RequestException as exc:
            raise CommandError(f"HTTP failure during the benchmark: {exc}") from exc
        goals = self.goals(figures)
        figures["goals"] = [g.as_dict() for g in goals]
        figures["all_goals_met"] = all(g.met for g in goals)
        figures["wall_seconds"] = round(time.perf_counter() - self.t0, 1)
        # Everything here shares the machine with the demo's servers: a busy machine shows in the load average.
        figures["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                              "loadavg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                              "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)}
        figures["python"] = platform.python_version()
        figures["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        output: Path = options["output"]
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(figures, indent=2, default=str) + "\n")
        self.stdout.write("")
        self.stdout.write(self.table(figures, goals))
        self.stdout.write(f"\n-> {output} (whole run {figures['wall_seconds']:.0f} s; load average "
                          f"{load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")

    # ------------------------------------------------------------------ seeding

    def count_documents(self, sites: Sites, patient: str, session: requests.Session, timeout: float) -> int:
        body = registry_post(session, sites.registry, find_documents(patient, ReturnType.ObjectRef), timeout)
        return count_object_refs(body)

    def seed_patient(self, sites: Sites, patient: str, options: dict[str, Any]) -> dict[str, Any]:
        """The bench patient with --documents entries: ITI-8, then ITI-42 for the missing ones."""
        wanted, timeout = options["documents"], options["timeout"]
        with requests.Session() as session:
            before = self.count_documents(sites, patient, session, timeout)
            missing = documents_to_register(before, wanted)
            if not missing:
                self.say(f"[seed] the bench patient already has {before} documents (>= {wanted}): reused")
                return {"patient_fed": False, "documents_before": before, "registered": 0, "documents_after": before}
            control = f"XB{secrets.token_hex(6)}"
            try:
                answer = mllp.exchange(*sites.hl7, adt_a04(patient, BENCH_FAMILY, BENCH_GIVEN, control),
                                       timeout=30, ssl_context=node_client_context())
                check_ack(answer, control)
            except (OSError, mllp.MllpError, FeedError) as exc:
                raise CommandError(f"ITI-8 feed of the bench patient to {sites.hl7[0]}:{sites.hl7[1]}: {exc}") from exc
            codes, mimes = codes_for(load_affinity_domain(settings.XDS_AFFINITY_DOMAIN_CODES))
            plan = LoadPlan(run="portal", authority=settings.XDS_AFFINITY_DOMAIN_AUTHORITY, patients=1,
                            docs_per_patient=missing, per_submission=PER_SUBMISSION, seed=12, codes=codes,
                            mime_types=mimes, repository_unique_id=settings.XDS_REPOSITORY_UNIQUE_ID)
            rng = random.Random(secrets.randbits(64))  # fresh uniqueIds on every seeding
            started = time.perf_counter()
            first = before
            for number, size in enumerate(submission_sizes(missing)):
                submission = make_submission(plan, patient, first, size, rng)
                # Two source hospitals: the patient page groups by source.
                submission.submission_set.source_id = (sites.a_source_id, sites.b_source_id)[number % 2]
                registry_post(session, sites.registry, soap_message(Action.RegisterDocumentSet,
                                                                    submit_objects_request(submission)), timeout)
                first += size
            seconds = time.perf_counter() - started
            after = self.count_documents(sites, patient, session, timeout)
        self.say(f"[seed] bench patient fed (ITI-8); {missing} documents registered by ITI-42 in "
                 f"{len(submission_sizes(missing))} submission sets in {seconds:.1f} s; registry now counts {after}")
        if after < wanted:
            raise CommandError(f"the registry counts {after} documents of the bench patient after seeding, "
                               f"not {wanted}")
        return {"patient_fed": True, "documents_before": before, "registered": missing, "documents_after": after,
                "register_seconds": round(seconds, 2)}

    def publish_at_a(self, sites: Sites, study: str) -> float:
        seconds, line = publish_at_site(sites.a_env_file, study, "Hospital A")
        self.say(f"[seed] published at Hospital A in {seconds:.1f} s: {line}")
        return seconds

    def seed_study(self, sites: Sites, patient: str, options: dict[str, Any]) -> StudyLoad:
        n = options["instances"]
        study, series, sops, parts = portal_study(sites.a_issuer, n)
        held = orthanc_instance_count(sites.a_dicomweb, study)
        figures: dict[str, Any] = {"study_instance_uid": study, "instances": n, "series": len(series),
                                   "patient": patient, "local_patient_at_a": STUDY_LOCAL_ID}
        if held != n:
            if held:
                orthanc_remove(sites.a_dicomweb, study)  # a different earlier size: start over
            self.say(f"[seed] study {study}: {n} instances in {len(series)} series, STOW-RS into Orthanc A")
            started = time.perf_counter()
            size = stow(sites.a_dicomweb, parts)
            figures.update(stored_bytes=size, load_seconds=round(time.perf_counter() - started, 2))
            figures["publish_seconds"] = round(self.publish_at_a(sites, study), 2)
        else:
            self.say(f"[seed] study {study}: Orthanc A already holds its {n} instances")
        manifest = self.find_manifest(sites, patient, study, options["timeout"])
        if manifest is None:
            figures["publish_seconds"] = round(self.publish_at_a(sites, study), 2)
            manifest = self.find_manifest(sites, patient, study, options["timeout"])
        if manifest is None:
            raise CommandError(f"no manifest of study {study} for {patient} in {sites.registry} after publishing")
        figures.update(repository_unique_id=manifest[0], document_unique_id=manifest[1])
        self.say(f"[seed] manifest {manifest[1]} in repository {manifest[0]}")
        return StudyLoad(study, series, sops, manifest[0], manifest[1], figures)

    def find_manifest(self, sites: Sites, patient: str, study: str, timeout: float) -> tuple[str, str] | None:
        try:
            found = find_manifests(sites.registry, FindQuery(patient_id=patient, format_codes=sites.format_codes,
                                                             study_instance_uid=study), timeout=timeout)
        except FindError as exc:
            raise CommandError(f"ITI-18 for the study's manifest: {exc}") from exc
        if not found.manifests:
            return None
        newest = max(found.manifests, key=lambda m: m.creation_time)
        return newest.repository_unique_id, newest.unique_id

    # ------------------------------------------------------------------ 2. manifest page

    def fetch_thumbnails(self, portal: Portal, urls: list[str]) -> list[dict[str, Any]]:
        out = []
        for src in urls:
            response = portal.get(src)
            out.append({"status": response.status, "client_ms": round(response.client_ms, 1),
                        "server_ms": response.server_ms})
        return out

    def manifest_page(self, portal: Portal, path: str, options: dict[str, Any]) -> dict[str, Any]:
        first = self.check_page("manifest page", portal.get(path))
        facts = page_facts(first.text)
        if not facts.thumbnails:
            raise CommandError(f"the manifest page {path} shows no img.thumbnail")
        warmed = self.fetch_thumbnails(portal, facts.thumbnails)
        bad = [w for w in warmed if w["status"] != 200]
        self.say(f"[manifest page] {len(facts.thumbnails)} thumbnails fetched once to fill the cache "
                 f"({len(bad)} not 200; slowest {max(w['client_ms'] for w in warmed):.0f} ms)")
        figures = self.timed_pages(portal, "manifest page", path, options)
        figures["warm_up_thumbnails"] = warmed
        return figures

    # ------------------------------------------------------------------ 3. first thumbnail

    def clear_thumbnails(self, load: StudyLoad) -> int:
        """Delete the study's ThumbnailCache rows from this site's (B's) database; -> rows deleted."""
        try:
            from portal.models import ThumbnailCache  # type: ignore[attr-defined]
        except ImportError as exc:
            raise CommandError("portal.models has no ThumbnailCache: the thumbnail cache is not in place") from exc
        names = {f.name for f in ThumbnailCache._meta.get_fields()}
        if "study_instance_uid" in names:
            rows = ThumbnailCache.objects.filter(study_instance_uid=load.study)
        elif "series_instance_uid" in names:
            rows = ThumbnailCache.objects.filter(series_instance_uid__in=load.series)
        elif "sop_instance_uid" in names:
            rows = ThumbnailCache.objects.filter(sop_instance_uid__in=load.sops)
        else:
            raise CommandError(f"ThumbnailCache has no study, series or SOP Instance UID field ({sorted(names)})")
        deleted, _ = rows.delete()
        return deleted

    def first_thumbnail(self, portal: Portal, path: str, load: StudyLoad, options: dict[str, Any]
                        ) -> dict[str, Any]:
        runs = []
        for run in range(options["cold_runs"]):
            deleted = self.clear_thumbnails(load)
            started = time.perf_counter()
            page = self.check_page("manifest page (cold)", portal.get(path))
            page_ms = (time.perf_counter() - started) * 1000
            thumbnails = page_facts(page.text).thumbnails
            if not thumbnails:
                raise CommandError(f"the manifest page {path} shows no img.thumbnail")
            response = portal.session.get(portal.url(thumbnails[0]), timeout=portal.timeout)
            total_ms = (time.perf_counter() - started) * 1000
            if response.status_code != 200 or not response.content.startswith(b"\x89PNG"):
                raise CommandError(f"first thumbnail {thumbnails[0]}: HTTP {response.status_code}, "
                                   f"{response.headers.get('Content-Type')} (not a PNG)")
            runs.append({"cache_rows_deleted": deleted, "page_ms": round(page_ms, 1),
                         "thumbnail_ms": round(total_ms - page_ms, 1), "total_ms": round(total_ms, 1),
                         "thumbnail_server_ms": server_time_ms(response.headers.get("Server-Timing")),
                         "png_bytes": len(response.content)})
            self.say(f"[first thumbnail] run {run + 1}: {deleted} cache rows deleted; page {page_ms:.0f} ms + "
                     f"first PNG {total_ms - page_ms:.0f} ms = {total_ms:.0f} ms")
        totals = [r["total_ms"] for r in runs]
        # Fill the cache again for whoever comes next (the manifest page figures are already taken).
        self.fetch_thumbnails(portal, page_facts(portal.get(path).text).thumbnails)
        return {"what": "cold cache: manifest page request -> first thumbnail PNG received (client clock)",
                "runs": runs, "total_ms_median": round(statistics.median(totals), 1), "informative": True}

    # ------------------------------------------------------------------ 4. render

    def render(self, options: dict[str, Any]) -> dict[str, Any]:
        try:
            from imaging_source.rendering import render_thumbnail  # type: ignore[import-not-found]
        except ImportError as exc:
            raise CommandError("imaging_source.rendering.render_thumbnail is not in place") from exc
        source = ct_512()
        render_thumbnail(source)  # warm-up: imports, codecs
        times: list[float] = []
        for _ in range(options["renders"]):
            started = time.perf_counter()
            render_thumbnail(source)
            times.append((time.perf_counter() - started) * 1000)
        figures = {"what": f"render_thumbnail(bytes) of a {RENDER_SIDE}x{RENDER_SIDE} 16-bit CT (12 stored), "
                           f"{len(source)} bytes Part 10, in this process", **summary(times)}
        self.say(f"[render] {len(times)} renders: p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms")
        return figures

    # ------------------------------------------------------------------ 5. ITI-18 under load

    def iti18_series(self, sites: Sites, patient: str, session: requests.Session, timeout: float,
                     keep_going: Callable[[int], bool]) -> list[float]:
        times: list[float] = []
        while keep_going(len(times)):
            message = find_documents(patient, ReturnType.LeafClass)  # its own wsa:MessageID, built off the clock
            started = time.perf_counter()
            body = registry_post(session, sites.registry, message, timeout)
            times.append((time.perf_counter() - started) * 1000)
            if b"ExtrinsicObject" not in body:
                raise CommandError("ITI-18 FindDocuments of the bench patient found nothing")
        return times

    def iti18_under_load(self, portal: Portal, sites: Sites, patient: str, manifest_path: str, load: StudyLoad,
                         options: dict[str, Any]) -> dict[str, Any]:
        timeout = options["timeout"]
        session = requests.Session()
        idle = self.iti18_series(sites, patient, session, timeout, lambda n: n < options["iti18_idle"])
        self.say(f"[iti-18] alone: {len(idle)} FindDocuments, p50 {percentile(idle, .5):.0f} ms, p99 "
                 f"{percentile(idle, .99):.0f} ms")
        facts = page_facts(self.check_page("manifest page", portal.get(manifest_path)).text)
        if facts.download is None or facts.import_action is None:
            raise CommandError("the manifest page has no a#download-zip or form#import-form")
        removed = orthanc_remove(sites.b_dicomweb, load.study)  # the import must do the real work
        if removed:
            self.say(f"[load] an earlier copy of the study removed from Orthanc B ({removed})")
        downloads: list[dict[str, Any]] = []
        job: dict[str, Any] = {}
        errors: list[str] = []
        import_done = threading.Event()
        start = time.perf_counter()

        def run_import() -> None:
            own = portal.clone()
            try:
                answer = own.post_form(facts.import_action or manifest_path,
                                       import_fields(facts.import_fields, options["local_patient"]))
                location = answer.headers.get("Location", "")
                if answer.status_code not in (302, 303) or "/imports/" not in location:
                    raise CommandError(f"import POST: HTTP {answer.status_code} -> {location or answer.text[:200]}")
                job["status_url"] = location
                state = ""
                while time.perf_counter() - start < timeout:
                    state = page_facts(own.get(location).text).import_state or ""
                    if state.startswith((IMPORT_DONE, IMPORT_FAILED)):
                        break
                    time.sleep(0.5)
                job.update(state=state, seconds=round(time.perf_counter() - start, 2))
            except (CommandError, requests.RequestException) as exc:
                errors.append(f"import: {exc}")
            finally:
                import_done.set()

        def run_zips(worker: int) -> None:
            own = portal.clone()
            while not (import_done.is_set() and time.perf_counter() - start >= options["load_seconds"]):
                begun = time.perf_counter()
                try:
                    with own.session.get(own.url(facts.download or ""), stream=True, timeout=timeout) as got:
                        if got.status_code != 200:
                            errors.append(f"zip {worker}: HTTP {got.status_code} {got.headers.get('Retry-After', '')}")
                            time.sleep(1)
                            continue
                        size, tail = 0, b""
                        for chunk in got.iter_content(1024 * 1024):
                            size += len(chunk)
                            tail = (tail + chunk)[-ZIP_TAIL:]
                except requests.RequestException as exc:
                    errors.append(f"zip {worker}: {exc}")
                    return
                seconds = time.perf_counter() - begun
                downloads.append({"worker": worker, "bytes": size, "seconds": round(seconds, 3),
                                  "mb_per_s": mb_per_s(size, seconds), "complete": zip_complete(tail)})

        threads = [threading.Thread(target=run_import, name="bench-import", daemon=True),
                   *(threading.Thread(target=run_zips, args=(w,), name=f"bench-zip-{w}", daemon=True)
                     for w in (1, 2))]
        for thread in threads:
            thread.start()
        self.say("[load] 1 import + 2 zip downloads running; ITI-18 FindDocuments in a loop meanwhile")
        busy = self.iti18_series(sites, patient, session, timeout,
                                 lambda n: any(t.is_alive() for t in threads[1:]))
        for thread in threads:
            thread.join(timeout)
        wall = time.perf_counter() - start
        session.close()
        try:
            job["instances_in_orthanc_b"] = orthanc_instance_count(sites.b_dicomweb, load.study)
            orthanc_remove(sites.b_dicomweb, load.study)
        except (requests.RequestException, CommandError) as exc:
            self.stderr.write(f"the imported study {load.study} is left in Orthanc B: {exc}")
        zipped = sum(d["bytes"] for d in downloads)
        zip_seconds = sorted(d["seconds"] for d in downloads)
        figures = {"what": "ITI-18 FindDocuments (LeafClass) of the bench patient, one client, against the domain "
                           "registry: alone, then while 2 threads download the study zip (repeated) and 1 import runs",
                   "idle": summary(idle), "under_load": summary(busy), "load_seconds": round(wall, 1),
                   "import": job, "zip_downloads": len(downloads), "zip_bytes_each": downloads[0]["bytes"]
                   if downloads else None,
                   "zip_seconds_median": statistics.median(zip_seconds) if zip_seconds else None,
                   "zip_mb_per_s_median": statistics.median(d["mb_per_s"] for d in downloads) if downloads else None,
                   "zip_mb_per_s_aggregate": mb_per_s(zipped, wall),
                   "zips_complete": sum(1 for d in downloads if d["complete"]), "errors": errors[:10]}
        self.say(f"[load] {len(busy)} ITI-18 under load: p50 {figures['under_load']['p50_ms']} ms, p99 "
                 f"{figures['under_load']['p99_ms']} ms; {len(downloads)} zips "
                 f"({figures['zip_mb_per_s_median']} MB/s each, median); import {job.get('state', '?')} after "
                 f"{job.get('seconds', '?')} s ({job.get('instances_in_orthanc_b', '?')} instances in Orthanc B); "
                 f"{len(errors)} errors{': ' + errors[0] if errors else ''}")
        if not downloads or not job.get("state", "").startswith(IMPORT_DONE) or \
                figures["zips_complete"] != len(downloads):
            figures["incomplete"] = "the load did not run as intended (see errors / import state)"
        return figures

    # ------------------------------------------------------------------ report

    @staticmethod
    def goals(figures: dict[str, Any]) -> list[Goal]:
        return [
            Goal("patient page (200 documents) p95", figures["patient_page"]["judged"]["p95_ms"], "<",
                 GOAL_PAGE_P95_MS, "ms"),
            Goal("manifest page (500 instances, thumbnails cached) p95", figures["manifest_page"]["judged"]["p95_ms"],
                 "<", GOAL_PAGE_P95_MS, "ms"),
            Goal("thumbnail render 512x512 CT p95", figures["render"]["p95_ms"], "<", GOAL_RENDER_P95_MS, "ms"),
            Goal("ITI-18 p99 during 2 zips + 1 import", figures["iti18_under_load"]["under_load"]["p99_ms"], "<",
                 GOAL_ITI18_P99_MS, "ms"),
        ]

    @staticmethod
    def table(figures: dict[str, Any], goals: list[Goal]) -> str:
        def yes(met: bool | None) -> str:
            return "n/a" if met is None else ("yes" if met else "NO")

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:g} ms"

        rows = [["measurement", "time", "p50", "p95", "p99", "n", "goal", "met"]]
        for key, goal in (("patient_page", goals[0]), ("manifest_page", goals[1])):
            page = figures[key]
            source = "server" if page["server"] else "client wall"
            judged = page["judged"]
            rows.append([goal.name, source, ms(judged["p50_ms"]), ms(judged["p95_ms"]), ms(judged["p99_ms"]),
                         str(judged["n"]), "p95 " + goal.text(), yes(goal.met)])
        first = figures["first_thumbnail"]
        rows.append(["first thumbnail end to end (cold cache)", "client", ms(first["total_ms_median"]) + " median",
                     "", "", str(len(first["runs"])), "(informative)", "info"])
        render = figures["render"]
        rows.append([goals[2].name, "in process", ms(render["p50_ms"]), ms(render["p95_ms"]), ms(render["p99_ms"]),
                     str(render["n"]), "p95 " + goals[2].text(), yes(goals[2].met)])
        load = figures["iti18_under_load"]
        rows.append(["ITI-18 FindDocuments alone", "client", ms(load["idle"]["p50_ms"]), ms(load["idle"]["p95_ms"]),
                     ms(load["idle"]["p99_ms"]), str(load["idle"]["n"]), "-", "-"])
        busy = load["under_load"]
        rows.append([goals[3].name, "client", ms(busy["p50_ms"]), ms(busy["p95_ms"]), ms(busy["p99_ms"]),
                     str(busy["n"]), "p99 " + goals[3].text(), yes(goals[3].met)])
        rows.append([f"  zip downloads during the load ({load['zip_downloads']})", "client",
                     f"{load['zip_mb_per_s_median']} MB/s each", f"{load['zip_mb_per_s_aggregate']} MB/s total",
                     "", "", "-", "-"])
        met = sum(1 for g in goals if g.met)
        return format_table(rows) + f"\n{met}/{len(goals)} goals met"


__all__ = ["Command", "PageFacts", "adt_a04", "count_object_refs", "csrf_cookie_name", "documents_to_register",
           "import_fields", "page_facts", "patient_cx", "percentile", "server_time_ms", "series_of", "study_uids",
           "submission_sizes", "summary", "zip_complete"]
