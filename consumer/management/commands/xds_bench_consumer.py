"""manage.py xds_bench_consumer: the Imaging Document Consumer of Hospital B against direct DICOMweb copies.

``make bench-consumer`` runs it as Hospital B (``XDS_ENV_FILE=var/demo/hospital-b.env``) against the
running demo affinity domain (``make run``).  Hospital A's settings come from its env file
(``--site-a-env``, default ``var/demo/hospital-a.env``: DICOMWEB_URL, PORT, XDS_IMAGING_SOURCE_ID,
XDS_IMAGING_SOURCE_PATIENT_AUTHORITY); Hospital B's from this process's settings (DICOMWEB_URL,
XDS_CONSUMER_REGISTRY_URL, XDS_SITE_CONSUMER_IDENTITY, the endpoint directory in B's database).

What is measured (every timing with ``time.perf_counter``; consumer and baseline in ``--pairs`` pairs of
alternating order, A B / B A / ..., after one unmeasured warm-up pair; medians reported):

1. Benchmark study: ``--instances`` (500) copies of pydicom's ``CT_small.dcm`` (128x128, 16 bit) with new
   UIDs, Patient ID ``A-1002`` / Issuer ``1.3.6.1.4.1.21367.13.81.1`` (Hospital A's local id of affinity
   patient DEMO-1002), Demo^Alice, STOWed into Orthanc A and published at Hospital A
   (``manage.py xds_publish --study`` with A's env file: RAD-68 to the domain repository).
2. Into files at B, end to end: ITI-18 (FindDocumentsByReferenceId, FindDocuments as fallback) for the
   affinity patient and study + ITI-43 from the domain repository + RAD-69 from A's Imaging Document
   Source (URLs from B's endpoint directory, real HTTP) into :class:`FilesDestination` (temp + fsync +
   rename per file) -- against one WADO-RS study request straight to Orthanc A, each part written to
   its own file (write + fsync per file, one directory fsync: the same durability).
   ratio = direct time / consumer time, goal >= 0.7.
3. Into B's PACS: the consumer with :class:`DicomwebImport` (one QIDO-RS per series, STOW-RS in batches,
   import reconciliation to ``--local-patient``) -- against a direct copy: WADO-RS study from Orthanc A,
   STOW-RS to Orthanc B in requests of 100 instances while the WADO-RS answer is still arriving.  The
   study is deleted from Orthanc B (Orthanc REST API) before each run.  ratio as in 2, goal >= 0.7.
4. WAN: a :class:`~xds_core.wan_emulator.DelayingProxy` (100 Mbit/s, 20 ms each way) in front of
   Hospital A's HTTP port; only RAD-69 goes through it (an imaging-source resolver that answers the
   proxy's URL for A's Retrieve Location UID).  The NIST study and the benchmark study, with the default
   transfer syntaxes and with ``transfer_syntaxes(True)`` (JPEG-LS lossless first); link time = the
   RAD-69 time, goal compressed <= 0.6 x raw.  The transfer syntaxes actually received are reported,
   and the pixels of the last compressed run are compared with the originals from Orthanc A (both
   decoded by pydicom: ``bit_exact``).  One more unmeasured-for-goal run per study asks for JPEG-LS
   Lossless only, to show whether the source can transcode and what it would cost.
5. Big study (``--big-gb``, default 2; ``--skip-big``): 512x512 12-bit-in-16 instances (~0.5 MB, a smooth
   phantom plus 4 bits of noise) generated and STOWed into Orthanc A in batches (never all in memory),
   published at A, then fetched into files at B in this process: RSS growth (peak VmRSS sampled every
   50 ms by a thread minus VmRSS before the fetch, goal < 100 MB), time to first instance on disk (start
   of the fetch, ITI-18 included, to the first ``instance`` ProgressEvent), total time and MB/s.  Refused
   when less than 3x its size is free on disk.  The study and the files are removed afterwards.

The benchmark studies are removed from Orthanc A and B at the end (also on failure), so reruns measure
the same PACS; their manifests stay in the registry (published and Approved, of studies no longer in
the PACS).  Writes ``var/bench/consumer.json`` and prints a table consumer vs baseline.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pydicom
import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless, generate_uid

from consumer.destinations import Destination
from consumer.directory import resolve
from consumer.fetch import ManifestOutcome, Resolvers, fetch_into, resolver, transfer_syntaxes
from consumer.files import FilesDestination, fsync_directory
from consumer.find import FindQuery, FoundManifest, find_manifests
from consumer.models import EndpointKind
from consumer.pacs_import import DicomwebImport, reconciliation_for
from consumer.retrieval import ProgressEvent
from xds_core.env_file import parse_env_text
from xds_core.multipart import boundary_of, iter_parts
from xds_core.wan_emulator import DelayingProxy, WanLink

MB = 1_000_000
GOAL_FILES_RATIO = 0.7
GOAL_PACS_RATIO = 0.7
GOAL_WAN_COMPRESSED_OVER_RAW = 0.6
GOAL_BIG_RSS_GROWTH_MB = 100.0
#: Free disk the big study needs, as a multiple of its size (Orthanc A's copy, the files at B, spool).
DISK_FACTOR = 3

AFFINITY_AUTHORITY = "1.3.6.1.4.1.21367.2005.13.20.1000"
BENCH_PATIENT = f"DEMO-1002^^^&{AFFINITY_AUTHORITY}&ISO"
BENCH_LOCAL_ID = "A-1002"
BENCH_PATIENT_NAME = "Demo^Alice"
NIST_PATIENT = f"IDS-AD002-a^^^&{AFFINITY_AUTHORITY}&ISO"
NIST_STUDY = "1.3.6.1.4.1.21367.201599.1.201604020954059"
#: Hospital B's local id the imports are coerced to; not B-1003 (that is DEMO-1003, another patient).
DEFAULT_LOCAL_PATIENT = "B-1002^^^&1.3.6.1.4.1.21367.13.82.1&ISO"
WAN_LINK = WanLink(rate=100e6, delay=0.020)
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
STOW_BATCH = 100
#: Writer threads of the consumer's files destination: what ``xds_fetch --out`` uses.
FILE_WRITERS = 2
BIG_SIDE = 512
BIG_PER_SERIES = 1000


# ============================================================================ pure helpers

def read_env_file(path: Path, required: Iterable[str] = ()) -> dict[str, str]:
    """A site's env file; CommandError when it cannot be read or lacks a ``required`` key."""
    try:
        values = parse_env_text(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror} (`make run` writes the site files)") from exc
    except ValueError as exc:
        raise CommandError(f"{path}: {exc}") from exc
    missing = [key for key in required if not values.get(key)]
    if missing:
        raise CommandError(f"{path} has no {', '.join(missing)}")
    return values


def vmrss_bytes(status: str) -> int:
    """VmRSS of a ``/proc/<pid>/status`` text, in bytes."""
    units = {"kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3, "b": 1}
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            return int(fields[1]) * units.get(fields[2].lower() if len(fields) > 2 else "kb", 1024)
    raise ValueError("no VmRSS line in the status text")


def _own_rss() -> int:
    return vmrss_bytes(Path("/proc/self/status").read_text())


class RssSampler:
    """Peak resident set size while it runs: ``read()`` at start, then every ``interval`` s on a thread."""

    def __init__(self, interval: float = 0.05, read: Callable[[], int] = _own_rss) -> None:
        self.interval = interval
        self._read = read
        self.before = 0
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        value = self._read()
        self.peak = max(self.peak, value)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> RssSampler:
        self.before = self.peak = self._read()
        self.samples = 1
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sample()

    @property
    def growth(self) -> int:
        """Peak minus the value at start (bytes, >= 0)."""
        return max(0, self.peak - self.before)

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Goal:
    """One goal: ``value op target`` (``>=``, ``<=`` or ``<``); ``met`` is None without a value."""

    name: str
    value: float | bool | None
    op: str  # ">=", "<=", "<", or "==" (e.g. a bool against True)
    target: float | bool
    unit: str = ""

    @property
    def met(self) -> bool | None:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return None
        if self.op == "==":
            return self.value == self.target
        if self.op == ">=":
            return self.value >= self.target
        if self.op == "<=":
            return self.value <= self.target
        if self.op == "<":
            return self.value < self.target
        raise ValueError(f"unknown comparison {self.op!r}")

    def text(self) -> str:
        target = str(self.target).lower() if isinstance(self.target, bool) else f"{self.target:g}"
        return f"{self.op} {target}{(' ' + self.unit) if self.unit else ''}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "goal": self.text(), "met": self.met}


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else math.nan


def mb_per_s(size: int, seconds: float) -> float:
    return round(size / seconds / MB, 1) if seconds > 0 else math.nan


def interleaved(pairs: int, first: Callable[[], float], second: Callable[[], float],
                on_pair: Callable[[int, float, float], None] | None = None) -> tuple[list[float], list[float]]:
    """``pairs`` measurements of each, in alternating order (first-second, second-first, ...)."""
    a: list[float] = []
    b: list[float] = []
    for i in range(pairs):
        if i % 2:
            b.append(second())
            a.append(first())
        else:
            a.append(first())
            b.append(second())
        if on_pair is not None:
            on_pair(i, a[-1], b[-1])
    return a, b


def disk_problem(free: int, needed_size: int, factor: int = DISK_FACTOR) -> str | None:
    """Why there is not room for a study of ``needed_size`` bytes (``factor`` x free needed), or None."""
    if free >= factor * needed_size:
        return None
    return (f"the big study needs {factor} x {needed_size / 1e9:.1f} GB = {factor * needed_size / 1e9:.1f} GB free "
            f"disk, only {free / 1e9:.1f} GB is free: lower --big-gb or use --skip-big")


def instances_for(total_bytes: float, per_instance: int) -> int:
    """How many instances of ``per_instance`` bytes make ``total_bytes`` (at least one)."""
    return max(1, math.ceil(total_bytes / per_instance))


def published_line(stdout: str) -> str:
    """The line of ``manage.py xds_publish`` saying the study is in the registry (published, replaced or
    unchanged), or "" (queued for reconciliation, failed, ...)."""
    for line in stdout.splitlines():
        if any(f": {outcome} (" in line for outcome in ("published", "replaced", "unchanged")):
            return line.strip()
    return ""


def format_table(rows: list[list[str]]) -> str:
    """Left-aligned columns, a rule under the header row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def breakdown_medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each phase over ``runs`` (every run names the same phases)."""
    return {key: round(statistics.median(run[key] for run in runs), 4) for key in (runs[0] if runs else {})}


def _syntax_names(counts: dict[str, int]) -> str:
    """``{"1.2.840.10008.1.2.1 (Explicit VR Little Endian)": 36}`` -> ``Explicit VR Little Endian x36``."""
    return ", ".join(f"{key.split(' (', 1)[-1].rstrip(')')} x{n}" for key, n in counts.items())


def _round(values: list[float]) -> list[float]:
    return [round(v, 4) for v in values]


# ============================================================================ DICOM and DICOMweb helpers

def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _patient(ds: Dataset, issuer: str) -> None:
    ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = BENCH_LOCAL_ID, issuer, BENCH_PATIENT_NAME
    ds.PatientBirthDate, ds.PatientSex = "19751122", "F"


def bench_study(n: int, issuer: str) -> tuple[str, Iterator[bytes]]:
    """(Study Instance UID, Part 10 of each of ``n`` CT_small copies of patient A-1002 in one new series)."""
    study = generate_uid()

    def generate() -> Iterator[bytes]:
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        _patient(ds, issuer)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
        ds.AccessionNumber, ds.StudyDescription = "BENCH-CONS", "Consumer benchmark"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = datetime.now(UTC).strftime("%Y%m%d")
        for number in range(1, n + 1):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = number
            yield _part10(ds)
    return study, generate()


def big_study(count: int, issuer: str, *, seed: int = 1) -> tuple[str, int, Iterator[bytes]]:
    """(Study UID, bytes per instance, a generator of ``count`` 512x512 instances, 12 bits in 16).

    A smooth phantom (rings) shifted per instance, plus 4 bits of noise: compressible like a real MR/CT
    slice, different in every instance.  Series of :data:`BIG_PER_SERIES` instances.
    """
    study = generate_uid()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    _patient(ds, issuer)
    ds.StudyInstanceUID, ds.AccessionNumber, ds.StudyDescription = study, "BENCH-BIG", "Consumer benchmark 2 GB"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = datetime.now(UTC).strftime("%Y%m%d")
    ds.Rows = ds.Columns = BIG_SIDE
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue", "RescaleIntercept", "RescaleSlope"):
        if keyword in ds:
            delattr(ds, keyword)
    y, x = np.mgrid[0:BIG_SIDE, 0:BIG_SIDE].astype(np.float32)
    rng = np.random.default_rng(seed)
    ds.PixelData = np.zeros((BIG_SIDE, BIG_SIDE), np.uint16).tobytes()
    size = len(_part10(ds))

    def generate() -> Iterator[bytes]:
        series_uid = ""
        for number in range(count):
            if number % BIG_PER_SERIES == 0:
                series_uid = generate_uid()
                ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, number // BIG_PER_SERIES + 1
            r = np.hypot(x - 256 - (number % 37), y - 256 + (number % 23))
            phantom = 2000 + 1500 * np.cos(r / (9 + number % 5))
            pixels = phantom.astype(np.uint16) + rng.integers(0, 16, phantom.shape, dtype=np.uint16)
            ds.PixelData = pixels.tobytes()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = number % BIG_PER_SERIES + 1
            yield _part10(ds)
    return study, size, generate()


def _stow_request(base: str, parts: list[bytes], session: requests.Session) -> None:
    boundary = uuid.uuid4().hex.encode()
    body = b"".join(b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + bytes(part) + b"\r\n"
                    for part in parts) + b"--" + boundary + b"--\r\n"
    response = session.post(f"{base}/studies", data=body, timeout=600, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary.decode()}',
        "Accept": "application/dicom+json"})
    if response.status_code != 200:
        raise CommandError(f"STOW-RS to {base}: HTTP {response.status_code} {response.text[:200]}")
    answer = response.json() if response.content.strip() else {}
    failed = (answer.get("00081198") or {}).get("Value") or []
    if failed:
        raise CommandError(f"STOW-RS to {base} refused {len(failed)} of {len(parts)} instances")


def stow(base: str, parts: Iterable[bytes | memoryview], *, batch: int = STOW_BATCH,
         session: requests.Session | None = None, on_batch: Callable[[int, int], None] | None = None) -> int:
    """STOW-RS (PS3.18 10.5) of ``parts`` in requests of ``batch`` instances, as they come; -> bytes sent.
    Only one batch is held at a time."""
    own = session is None
    session = session or requests.Session()
    pending: list[bytes | memoryview] = []
    sent = count = 0
    try:
        for part in parts:
            pending.append(part)
            sent += len(part)
            count += 1
            if len(pending) >= batch:
                _stow_request(base, pending, session)  # type: ignore[arg-type]
                pending = []
                if on_batch is not None:
                    on_batch(count, sent)
        if pending:
            _stow_request(base, pending, session)  # type: ignore[arg-type]
            if on_batch is not None:
                on_batch(count, sent)
    finally:
        if own:
            session.close()
    return sent


def wado_study(base: str, study: str, session: requests.Session) -> Iterator[memoryview]:
    """Every instance of ``study`` by one WADO-RS request (PS3.18 10.4.1), as stored, as they arrive."""
    response = session.get(f"{base}/studies/{study}", stream=True, timeout=600,
                           headers={"Accept": WADO_ACCEPT, "Accept-Encoding": "identity"})
    try:
        if response.status_code != 200:
            raise CommandError(f"WADO-RS {base}/studies/{study}: HTTP {response.status_code}")
        for _headers, body in iter_parts(boundary_of(response.headers["Content-Type"]),
                                         response.iter_content(1024 * 1024)):
            yield body
    finally:
        response.close()


def publish_at_site(env_file: Path, study: str, site: str) -> tuple[float, str]:
    """``manage.py xds_publish --study`` acting as the site of ``env_file`` (RAD-68 to the domain repository):
    (seconds, the "published" line); CommandError when it failed or did not publish."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "xds_publish", "--study", study],
        env={**os.environ, "XDS_ENV_FILE": str(env_file)}, capture_output=True, text=True, timeout=3600, check=False)
    seconds = time.perf_counter() - started
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        raise CommandError(f"publishing {study} at {site} failed ({done.returncode}): {output[-800:]}")
    line = published_line(done.stdout)
    if not line:
        # e.g. "queued": the site did not map the patient (the demo still starting?); nothing to retrieve.
        raise CommandError(f"{site} did not publish {study}: {output[-800:]}")
    return seconds, line


def check_demo_running(registry: str, a_dicomweb: str, b_dicomweb: str) -> None:
    """The demo's services a Hospital B benchmark needs: the domain registry and both Orthancs answer."""
    for what, url in (("the domain registry", registry + "?wsdl"), ("Orthanc A", orthanc_root(a_dicomweb) + "/system"),
                      ("Orthanc B", orthanc_root(b_dicomweb) + "/system")):
        try:
            requests.get(url, timeout=10).raise_for_status()
        except requests.RequestException as exc:
            raise CommandError(f"{what} at {url} does not answer ({exc}): start the demo with `make run`") from exc


def orthanc_root(dicomweb: str) -> str:
    base = dicomweb.rstrip("/")
    return base[: -len("/dicom-web")] if base.endswith("/dicom-web") else base


def orthanc_study_ids(dicomweb: str, study_uid: str) -> list[str]:
    found = requests.post(f"{orthanc_root(dicomweb)}/tools/lookup", data=study_uid, timeout=60)
    found.raise_for_status()
    return [hit["ID"] for hit in found.json() if hit.get("Type") == "Study"]


def orthanc_remove(dicomweb: str, study_uid: str) -> int:
    """Delete the study (every Orthanc study with that UID, whatever the patient) by Orthanc's REST API;
    -> how many Orthanc studies were deleted.  DICOMweb has no standard delete."""
    ids = orthanc_study_ids(dicomweb, study_uid)
    for orthanc_id in ids:
        response = requests.delete(f"{orthanc_root(dicomweb)}/studies/{orthanc_id}", timeout=900)
        if response.status_code != 200:
            raise CommandError(f"cannot delete study {study_uid} from {dicomweb}: HTTP {response.status_code}")
    return len(ids)


def orthanc_instance_count(dicomweb: str, study_uid: str) -> int:
    total = 0
    for orthanc_id in orthanc_study_ids(dicomweb, study_uid):
        stats = requests.get(f"{orthanc_root(dicomweb)}/studies/{orthanc_id}/statistics", timeout=60)
        stats.raise_for_status()
        total += int(stats.json()["CountInstances"])
    return total


def received_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.dcm") if p.is_file())


def transfer_syntax_counts(files: list[Path]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        counts[f"{ds.file_meta.TransferSyntaxUID} ({ds.file_meta.TransferSyntaxUID.name})"] += 1
    return dict(counts)


class ProgressProbe:
    """A ProgressEvent callback: time of the first stored instance, a progress line now and then."""

    def __init__(self, started: float, say: Callable[[str], None] | None = None, total: int = 0,
                 every: float = 5.0) -> None:
        self.started = started
        self.say = say
        self.total = total
        self.every = every
        self.first_instance: float | None = None
        self.done = 0
        self.last = started
        self.errors: list[str] = []

    def __call__(self, event: ProgressEvent) -> None:
        now = time.perf_counter()
        if event.kind == "instance":
            self.done += 1
            if self.first_instance is None:
                self.first_instance = now - self.started
        elif event.kind in ("error", "retry"):
            if len(self.errors) < 5:
                self.errors.append(event.message)
        if self.say is not None and now - self.last >= self.every:
            self.last = now
            self.say(f"  ... {self.done}/{self.total or '?'} instances stored, {now - self.started:.1f} s")


# ============================================================================ the command

@dataclass
class Sites:
    registry: str
    a_dicomweb: str
    a_port: int
    a_source_id: str
    a_issuer: str
    a_env_file: Path
    b_dicomweb: str
    identity: str
    format_codes: tuple[str, ...]


class Command(BaseCommand):
    help = "Benchmark Hospital B's Imaging Document Consumer against direct DICOMweb copies (make bench-consumer)."

    def add_arguments(self, parser: CommandParser) -> None:
        base = Path(settings.BASE_DIR)
        parser.add_argument("--pairs", type=int, default=3, help="consumer/baseline pairs per measurement")
        parser.add_argument("--instances", type=int, default=500, help="instances of the benchmark study")
        parser.add_argument("--big-gb", type=float, default=2.0, help="size of the big study in GB (1e9 bytes)")
        parser.add_argument("--skip-big", action="store_true", help="leave the big-study measurement out")
        parser.add_argument("--wan-slices", type=int, default=100,
                            help="512x512 slices of the informative WAN study (0: leave it out)")
        parser.add_argument("--site-a-env", type=Path, default=base / "var" / "demo" / "hospital-a.env",
                            help="Hospital A's env file (KEY=VALUE), written by `make run`")
        parser.add_argument("--local-patient", default=DEFAULT_LOCAL_PATIENT,
                            help="Hospital B's local id the PACS import coerces to (CX)")
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
        parser.add_argument("--output", type=Path, default=base / "var" / "bench" / "consumer.json")

    # ------------------------------------------------------------------ plumbing

    def say(self, message: str) -> None:
        elapsed = time.perf_counter() - self.t0
        self.stdout.write(f"[{elapsed:6.1f}s] {message}")
        self.stdout.flush()

    def sites(self, options: dict[str, Any]) -> Sites:
        a = read_env_file(options["site_a_env"], ("DICOMWEB_URL", "PORT", "XDS_IMAGING_SOURCE_ID",
                                                  "XDS_IMAGING_SOURCE_PATIENT_AUTHORITY"))
        if not settings.DICOMWEB_URL:
            raise CommandError("this site has no DICOMWEB_URL: run as Hospital B "
                               "(XDS_ENV_FILE=var/demo/hospital-b.env)")
        if not settings.XDS_CONSUMER_REGISTRY_URL:
            raise CommandError("this site has no XDS_CONSUMER_REGISTRY_URL: run as Hospital B")
        return Sites(registry=settings.XDS_CONSUMER_REGISTRY_URL, a_dicomweb=a["DICOMWEB_URL"].rstrip("/"),
                     a_port=int(a["PORT"]), a_source_id=a["XDS_IMAGING_SOURCE_ID"],
                     a_issuer=a["XDS_IMAGING_SOURCE_PATIENT_AUTHORITY"], a_env_file=options["site_a_env"],
                     b_dicomweb=settings.DICOMWEB_URL.rstrip("/"), identity=settings.XDS_SITE_CONSUMER_IDENTITY,
                     format_codes=tuple(settings.XDS_CONSUMER_KOS_FORMAT_CODES))

    def publish_at_a(self, sites: Sites, study: str) -> float:
        seconds, line = publish_at_site(sites.a_env_file, study, "Hospital A")
        self.say(f"published at Hospital A in {seconds:.1f} s: {line}")
        return seconds

    def find(self, sites: Sites, patient: str, study: str, timeout: float) -> FoundManifest:
        result = find_manifests(sites.registry, FindQuery(patient_id=patient, format_codes=sites.format_codes,
                                                          study_instance_uid=study), timeout=timeout)
        if not result.manifests:
            raise CommandError(f"no manifest of study {study} for {patient} in {sites.registry}")
        return result.manifests[-1]

    def consumer_run(self, sites: Sites, patient: str, study: str, destination: Destination, resolvers: Resolvers,
                     *, syntaxes: list[str], timeout: float, probe: ProgressProbe | None = None,
                     started: float | None = None) -> tuple[float, ManifestOutcome]:
        """ITI-18 + ITI-43 + RAD-69 into ``destination``: (seconds, outcome); CommandError unless all arrived."""
        t = started if started is not None else time.perf_counter()
        found = self.find(sites, patient, study, timeout)
        self.last_find_seconds = time.perf_counter() - t
        outcome = fetch_into(found, destination, resolvers, syntaxes=syntaxes, progress=probe, timeout=timeout)
        seconds = time.perf_counter() - t
        # ITI-18, ITI-43 (+ the destination's has() before RAD-69), RAD-69 (retrieve_manifest's own clock).
        self.breakdown.append({"iti18": self.last_find_seconds,
                               "iti43_and_setup": seconds - self.last_find_seconds - outcome.seconds,
                               "rad69_and_store": outcome.seconds})
        if not outcome.ok or outcome.retrieved != outcome.requested:
            raise CommandError(f"consumer retrieval of {study}: {outcome.retrieved}/{outcome.requested} retrieved, "
                               f"{outcome.failed} failed, {outcome.error or outcome.errors[:3]}")
        return seconds, outcome

    # ------------------------------------------------------------------ main

    def handle(self, *args: Any, **options: Any) -> None:
        self.t0 = time.perf_counter()
        self.breakdown: list[dict[str, float]] = []
        self.last_find_seconds = 0.0
        # One INFO line per imported instance would bury the progress lines; warnings still show.
        logging.getLogger("consumer.pacs_import").setLevel(logging.WARNING)
        if options["pairs"] < 1 or options["instances"] < 1 or options["big_gb"] <= 0:
            raise CommandError("--pairs, --instances and --big-gb must be positive")
        sites = self.sites(options)
        check_demo_running(sites.registry, sites.a_dicomweb, sites.b_dicomweb)
        directory = Resolvers(repository=resolver(EndpointKind.REPOSITORY),
                              imaging_source=resolver(EndpointKind.IMAGING_SOURCE))
        try:
            a_url = resolve(EndpointKind.IMAGING_SOURCE, sites.a_source_id)
        except LookupError as exc:
            raise CommandError(str(exc)) from exc
        self.say(f"Hospital B consumer ({sites.identity}); registry {sites.registry}; Hospital A imaging source "
                 f"{sites.a_source_id} at {a_url}; Orthanc A {sites.a_dicomweb}; Orthanc B {sites.b_dicomweb}")
        figures: dict[str, Any] = {"benchmark": "consumer_vs_direct_dicomweb", "pairs": options["pairs"],
                                   "sites": {"consumer": "hospital-b", "registry": sites.registry,
                                             "imaging_source_a": a_url, "orthanc_a": sites.a_dicomweb,
                                             "orthanc_b": sites.b_dicomweb}}
        work = Path(tempfile.mkdtemp(prefix="xds-bench-consumer-"))
        study, parts = bench_study(options["instances"], sites.a_issuer)
        try:
            load = self.load_bench_study(sites, options, study, parts)
            figures["study"] = load
            figures["files"] = self.measure_files(sites, options, study, load, directory, work)
            figures["pacs"] = self.measure_pacs(sites, options, study, load, directory)
            figures["wan"] = self.measure_wan(sites, options, study, directory, a_url, work)
            if options["skip_big"]:
                figures["big"] = {"skipped": True}
        except requests.RequestException as exc:  # a PACS or a server went away mid-run
            raise CommandError(f"HTTP failure during the benchmark: {exc}") from exc
        finally:
            for name, base in (("Orthanc A", sites.a_dicomweb), ("Orthanc B", sites.b_dicomweb)):
                try:
                    self.say(f"benchmark study removed from {name} ({orthanc_remove(base, study)} study)")
                except (requests.RequestException, CommandError) as exc:
                    self.stderr.write(f"benchmark study {study} left in {name}: {exc}")
            shutil.rmtree(work, ignore_errors=True)
        if not options["skip_big"]:
            try:
                figures["big"] = self.measure_big(sites, options, directory)
            except requests.RequestException as exc:
                raise CommandError(f"HTTP failure during the big-study benchmark: {exc}") from exc
        goals = self.goals(figures)
        figures["goals"] = [g.as_dict() for g in goals]
        figures["all_goals_met"] = all(g.met for g in goals)
        figures["wall_seconds"] = round(time.perf_counter() - self.t0, 1)
        figures["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                              "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)}
        figures["python"] = platform.python_version()
        figures["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        output: Path = options["output"]
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(figures, indent=2, default=str) + "\n")
        self.stdout.write("")
        self.stdout.write(self.table(figures, goals))
        self.stdout.write(f"\n-> {output} (whole run {figures['wall_seconds']:.0f} s)")

    # ------------------------------------------------------------------ 1. benchmark study

    def load_bench_study(self, sites: Sites, options: dict[str, Any], study: str, parts: Iterator[bytes]
                         ) -> dict[str, Any]:
        n = options["instances"]
        self.say(f"benchmark study {study}: generating {n} instances and STOWing them into Orthanc A")
        started = time.perf_counter()
        size = stow(sites.a_dicomweb, parts)
        load_seconds = time.perf_counter() - started
        self.say(f"loaded {n} instances ({size / MB:.1f} MB) into Orthanc A in {load_seconds:.1f} s")
        publish_seconds = self.publish_at_a(sites, study)
        return {"study_instance_uid": study, "patient": BENCH_PATIENT, "local_patient_at_a": BENCH_LOCAL_ID,
                       "instances": n, "bytes": size, "load_seconds": round(load_seconds, 3),
                       "publish_seconds": round(publish_seconds, 3)}

    # ------------------------------------------------------------------ 2. into files

    def measure_files(self, sites: Sites, options: dict[str, Any], study: str, load: dict[str, Any],
                      resolvers: Resolvers, work: Path) -> dict[str, Any]:
        n, size, timeout = load["instances"], load["bytes"], options["timeout"]
        session = requests.Session()
        runs = {"n": 0}
        consumer_bytes: list[int] = []
        direct_bytes: list[int] = []

        def fresh() -> Path:
            runs["n"] += 1
            return work / f"files-{runs['n']}"

        def consumer() -> float:
            out = fresh()
            try:
                destination = FilesDestination(out, writers=FILE_WRITERS)
                seconds, outcome = self.consumer_run(sites, BENCH_PATIENT, study, destination, resolvers,
                                                     syntaxes=transfer_syntaxes(False), timeout=timeout)
                consumer_bytes.append(outcome.bytes)
                if len(received_files(out)) != n:
                    raise CommandError(f"consumer wrote {len(received_files(out))} files, not {n}")
            finally:
                shutil.rmtree(out, ignore_errors=True)
            return seconds

        def direct() -> float:
            out = fresh()
            try:
                started = time.perf_counter()
                out.mkdir(parents=True)
                count = written = 0
                for body in wado_study(sites.a_dicomweb, study, session):
                    count += 1
                    with open(out / f"{count:06d}.dcm", "wb") as fh:
                        fh.write(body)
                        fh.flush()
                        os.fsync(fh.fileno())
                    written += len(body)
                fsync_directory(out)
                seconds = time.perf_counter() - started
                direct_bytes.append(written)
                if count != n:
                    raise CommandError(f"WADO-RS returned {count} instances, not {n}")
            finally:
                shutil.rmtree(out, ignore_errors=True)
            return seconds

        self.say(f"[files] warm-up: consumer {consumer():.3f} s, direct WADO-RS {direct():.3f} s")
        self.breakdown = []
        consumer_times, direct_times = interleaved(
            options["pairs"], consumer, direct,
            lambda i, c, d: self.say(f"[files] pair {i + 1}/{options['pairs']}: consumer {c:.3f} s "
                                     f"({mb_per_s(size, c)} MB/s), direct {d:.3f} s ({mb_per_s(size, d)} MB/s)"))
        session.close()
        c, d = statistics.median(consumer_times), statistics.median(direct_times)
        return {"what": "ITI-18 + ITI-43 + RAD-69 (real HTTP, directory URLs) into FilesDestination vs one WADO-RS "
                        "study request to Orthanc A, one file per part (write + fsync each)",
                "instances": n, "bytes": size, "consumer_bytes": consumer_bytes[-1], "direct_bytes": direct_bytes[-1],
                "consumer_seconds_median": round(c, 4), "consumer_seconds_all": _round(consumer_times),
                "direct_seconds_median": round(d, 4), "direct_seconds_all": _round(direct_times),
                "consumer_mb_per_s": mb_per_s(size, c), "direct_mb_per_s": mb_per_s(size, d),
                "consumer_breakdown_seconds_median": breakdown_medians(self.breakdown),
                "ratio_direct_over_consumer": round(ratio(d, c), 3), "goal": f">= {GOAL_FILES_RATIO}",
                "meets_goal": ratio(d, c) >= GOAL_FILES_RATIO}

    # ------------------------------------------------------------------ 3. into B's PACS

    def measure_pacs(self, sites: Sites, options: dict[str, Any], study: str, load: dict[str, Any],
                     resolvers: Resolvers) -> dict[str, Any]:
        n, size, timeout = load["instances"], load["bytes"], options["timeout"]
        reconciliation = reconciliation_for(options["local_patient"], BENCH_PATIENT, sites.identity)

        def check(what: str) -> None:
            count = orthanc_instance_count(sites.b_dicomweb, study)
            if count != n:
                raise CommandError(f"{what}: Orthanc B holds {count} instances of the study, not {n}")

        def consumer() -> float:
            orthanc_remove(sites.b_dicomweb, study)
            destination = DicomwebImport(sites.b_dicomweb, reconciliation, timeout=timeout)
            seconds, _ = self.consumer_run(sites, BENCH_PATIENT, study, destination, resolvers,
                                           syntaxes=transfer_syntaxes(False), timeout=timeout)
            check("consumer import")
            return seconds

        def direct() -> float:
            orthanc_remove(sites.b_dicomweb, study)
            with requests.Session() as source, requests.Session() as target:
                started = time.perf_counter()
                stow(sites.b_dicomweb, wado_study(sites.a_dicomweb, study, source), session=target)
                seconds = time.perf_counter() - started
            check("direct copy")
            return seconds

        self.say(f"[pacs] warm-up: consumer {consumer():.3f} s, direct WADO-RS -> STOW-RS {direct():.3f} s")
        self.breakdown = []
        consumer_times, direct_times = interleaved(
            options["pairs"], consumer, direct,
            lambda i, c, d: self.say(f"[pacs] pair {i + 1}/{options['pairs']}: consumer {c:.3f} s "
                                     f"({mb_per_s(size, c)} MB/s), direct {d:.3f} s ({mb_per_s(size, d)} MB/s)"))
        orthanc_remove(sites.b_dicomweb, study)
        c, d = statistics.median(consumer_times), statistics.median(direct_times)
        return {"what": "ITI-18 + ITI-43 + RAD-69 into Orthanc B by DicomwebImport (one QIDO-RS per series, STOW-RS "
                        f"in batches, reconciled to {options['local_patient']}) vs WADO-RS study from Orthanc A + "
                        f"STOW-RS to Orthanc B in requests of {STOW_BATCH}; study deleted from Orthanc B before "
                        "each run",
                "instances": n, "bytes": size,
                "consumer_seconds_median": round(c, 4), "consumer_seconds_all": _round(consumer_times),
                "direct_seconds_median": round(d, 4), "direct_seconds_all": _round(direct_times),
                "consumer_mb_per_s": mb_per_s(size, c), "direct_mb_per_s": mb_per_s(size, d),
                "consumer_breakdown_seconds_median": breakdown_medians(self.breakdown),
                "ratio_direct_over_consumer": round(ratio(d, c), 3), "goal": f">= {GOAL_PACS_RATIO}",
                "meets_goal": ratio(d, c) >= GOAL_PACS_RATIO}

    # ------------------------------------------------------------------ 4. WAN

    def measure_wan(self, sites: Sites, options: dict[str, Any], bench_uid: str, directory: Resolvers, a_url: str,
                    work: Path) -> dict[str, Any]:
        target = urlsplit(a_url)
        host, port = target.hostname or "127.0.0.1", target.port or 80
        if port != sites.a_port:
            self.stderr.write(f"note: the directory's URL for Hospital A ({a_url}) is not on A's PORT {sites.a_port}")
        out: dict[str, Any] = {"link": WAN_LINK.describe(), "rate_bit_per_s": WAN_LINK.rate,
                               "delay_one_way_s": WAN_LINK.delay, "through_the_link": "RAD-69 only (ITI-18 and "
                               "ITI-43 go to the domain node directly)", "studies": {}}
        with DelayingProxy((host, port), WAN_LINK) as proxy:
            proxy_host, proxy_port = proxy.address
            proxy_url = urlunsplit((target.scheme, f"{proxy_host}:{proxy_port}", target.path, target.query, ""))

            def via_proxy(unique_id: str) -> str:
                return proxy_url if unique_id == sites.a_source_id else directory.imaging_source(unique_id)

            resolvers = Resolvers(repository=directory.repository, imaging_source=via_proxy)
            self.say(f"[wan] {WAN_LINK.describe()}: RAD-69 to Hospital A through {proxy_url}")
            for name, patient, study in (("nist", NIST_PATIENT, NIST_STUDY), ("bench", BENCH_PATIENT, bench_uid)):
                out["studies"][name] = self.wan_study(sites, options, name, patient, study, resolvers, proxy, work)
            if options["wan_slices"]:
                out["studies"]["ct512"] = self.wan_slices(sites, options, resolvers, proxy, work)
        return out

    def wan_slices(self, sites: Sites, options: dict[str, Any], resolvers: Resolvers, proxy: DelayingProxy,
                   work: Path) -> dict[str, Any]:
        """The WAN measurement once more on slices of a real CT's size (512x512, 16 bit: the big study's
        generator), where the link, not the per-instance work, decides: CT_small's 128x128 slices are 32 kB.
        Informative; the issue's goal is judged on the NIST and the benchmark study."""
        study, per_instance, parts = big_study(options["wan_slices"], sites.a_issuer, seed=7)
        self.say(f"[wan:ct512] study {study}: {options['wan_slices']} slices of {per_instance / MB:.2f} MB into "
                 "Orthanc A, published at A")
        try:
            stow(sites.a_dicomweb, parts, batch=40)
            self.publish_at_a(sites, study)
            figures = self.wan_study(sites, options, "ct512", BENCH_PATIENT, study, resolvers, proxy, work)
            figures["informative"] = True
            return figures
        finally:
            try:
                orthanc_remove(sites.a_dicomweb, study)
            except (requests.RequestException, CommandError) as exc:
                self.stderr.write(f"[wan:ct512] study {study} left in Orthanc A: {exc}")

    def wan_study(self, sites: Sites, options: dict[str, Any], name: str, patient: str, study: str,
                  resolvers: Resolvers, proxy: DelayingProxy, work: Path) -> dict[str, Any]:
        timeout = options["timeout"]
        runs: dict[str, Any] = {"n": 0, "keep": None}
        details: dict[str, list[dict[str, Any]]] = {"raw": [], "compressed": []}

        def run(label: str, syntaxes: list[str], keep: bool = False) -> dict[str, Any]:
            runs["n"] += 1
            target = work / f"wan-{name}-{runs['n']}"
            down = proxy.bytes_down
            destination = FilesDestination(target, writers=FILE_WRITERS)
            seconds, outcome = self.consumer_run(sites, patient, study, destination, resolvers,
                                                 syntaxes=syntaxes, timeout=timeout)
            files = received_files(target)
            result = {"seconds_total": round(seconds, 4), "seconds_rad69": round(outcome.seconds, 4),
                      "link_bytes_down": proxy.bytes_down - down, "stored_bytes": outcome.bytes,
                      "instances": len(files), "transfer_syntaxes": transfer_syntax_counts(files)}
            if keep:
                if runs["keep"] is not None:
                    shutil.rmtree(runs["keep"], ignore_errors=True)
                runs["keep"] = target
            else:
                shutil.rmtree(target, ignore_errors=True)
            return result

        def raw() -> float:
            details["raw"].append(run("raw", transfer_syntaxes(False)))
            return details["raw"][-1]["seconds_rad69"]

        def compressed() -> float:
            details["compressed"].append(run("compressed", transfer_syntaxes(True), keep=True))
            return details["compressed"][-1]["seconds_rad69"]

        raw_times, compressed_times = interleaved(
            options["pairs"], raw, compressed,
            lambda i, r, c: self.say(f"[wan:{name}] pair {i + 1}/{options['pairs']}: raw RAD-69 {r:.3f} s "
                                     f"({details['raw'][-1]['link_bytes_down'] / MB:.1f} MB on the link), compressed "
                                     f"{c:.3f} s ({details['compressed'][-1]['link_bytes_down'] / MB:.1f} MB); "
                                     f"received {details['compressed'][-1]['transfer_syntaxes']}"))
        originals = self.original_pixels(sites, study)
        kept: Path = runs["keep"]
        exact, compared, problems = self.compare_pixels(kept, originals)
        shutil.rmtree(kept, ignore_errors=True)
        self.say(f"[wan:{name}] compressed run vs Orthanc A originals: {compared} instances compared, "
                 f"bit_exact={exact}{(' ' + '; '.join(problems[:3])) if problems else ''}")
        # Diagnostic, not a goal: JPEG-LS Lossless only, to see whether the source transcodes at all.
        diagnostic: dict[str, Any]
        try:
            diagnostic = run("jpegls-only", [JPEGLSLossless], keep=True)
            exact_ls, compared_ls, problems_ls = self.compare_pixels(runs["keep"], originals)
            diagnostic.update({"bit_exact": exact_ls, "instances_compared": compared_ls,
                               "problems": problems_ls[:3]})
            self.say(f"[wan:{name}] diagnostic, JPEG-LS Lossless only: RAD-69 {diagnostic['seconds_rad69']:.3f} s, "
                     f"{diagnostic['link_bytes_down'] / MB:.1f} MB on the link, received "
                     f"{diagnostic['transfer_syntaxes']}, bit_exact={exact_ls}")
        except CommandError as exc:
            diagnostic = {"error": str(exc)[:500]}
            self.say(f"[wan:{name}] diagnostic, JPEG-LS Lossless only: failed: {str(exc)[:300]}")
        finally:
            shutil.rmtree(runs["keep"], ignore_errors=True)
        r, c = statistics.median(raw_times), statistics.median(compressed_times)
        link_raw = statistics.median(d["link_bytes_down"] for d in details["raw"])
        if "seconds_rad69" in diagnostic:
            diagnostic["ratio_rad69_over_raw_median"] = round(ratio(diagnostic["seconds_rad69"], r), 3)
            diagnostic["ratio_link_bytes_over_raw_median"] = round(ratio(diagnostic["link_bytes_down"], link_raw), 3)
        link_compressed = statistics.median(d["link_bytes_down"] for d in details["compressed"])
        return {"study_instance_uid": study, "patient": patient, "instances": details["raw"][-1]["instances"],
                "stored_bytes_raw": details["raw"][-1]["stored_bytes"],
                "raw_rad69_seconds_median": round(r, 4), "raw_rad69_seconds_all": _round(raw_times),
                "compressed_rad69_seconds_median": round(c, 4),
                "compressed_rad69_seconds_all": _round(compressed_times),
                "raw_total_seconds_median": statistics.median(d["seconds_total"] for d in details["raw"]),
                "compressed_total_seconds_median": statistics.median(d["seconds_total"] for d in details["compressed"]),
                "raw_link_bytes_median": link_raw, "compressed_link_bytes_median": link_compressed,
                "raw_mb_per_s": mb_per_s(details["raw"][-1]["stored_bytes"], r),
                "compressed_transfer_syntaxes_received": details["compressed"][-1]["transfer_syntaxes"],
                "compressed_requested": transfer_syntaxes(True),
                "ratio_link_bytes_compressed_over_raw": round(ratio(link_compressed, link_raw), 3),
                "ratio_compressed_over_raw": round(ratio(c, r), 3), "goal": f"<= {GOAL_WAN_COMPRESSED_OVER_RAW}",
                "meets_goal": ratio(c, r) <= GOAL_WAN_COMPRESSED_OVER_RAW,
                "bit_exact": exact, "bit_exact_instances_compared": compared, "bit_exact_problems": problems[:5],
                "diagnostic_jpegls_only": diagnostic, "runs": details}

    def original_pixels(self, sites: Sites, study: str) -> dict[str, np.ndarray]:
        """SOP Instance UID -> decoded pixels of Orthanc A's stored copy (one WADO-RS study request)."""
        out: dict[str, np.ndarray] = {}
        with requests.Session() as session:
            for body in wado_study(sites.a_dicomweb, study, session):
                ds = pydicom.dcmread(io.BytesIO(bytes(body)))
                if "PixelData" in ds:
                    out[str(ds.SOPInstanceUID)] = ds.pixel_array.copy()
        return out

    @staticmethod
    def compare_pixels(root: Path, originals: dict[str, np.ndarray]) -> tuple[bool, int, list[str]]:
        """(all equal, how many compared, problems) of the received files' decoded pixels vs the originals."""
        problems: list[str] = []
        compared = 0
        for path in received_files(root):
            try:
                ds = pydicom.dcmread(path)
                uid = str(ds.SOPInstanceUID)
                if uid not in originals:
                    problems.append(f"{uid}: no original")
                    continue
                pixels = ds.pixel_array
            except Exception as exc:  # noqa: BLE001 - a codec error is a finding, not a crash
                problems.append(f"{path.name}: cannot decode: {exc}")
                continue
            compared += 1
            if pixels.shape != originals[uid].shape or not np.array_equal(pixels, originals[uid]):
                problems.append(f"{uid}: pixels differ ({ds.file_meta.TransferSyntaxUID.name})")
        return not problems and compared == len(originals), compared, problems

    # ------------------------------------------------------------------ 5. big study

    def measure_big(self, sites: Sites, options: dict[str, Any], resolvers: Resolvers) -> dict[str, Any]:
        total = options["big_gb"] * 1e9
        study, per_instance, parts = big_study(1, sites.a_issuer)  # the size of one instance
        count = instances_for(total, per_instance)
        size = count * per_instance
        temp_root = Path(tempfile.gettempdir())
        for where in {temp_root, Path(settings.BASE_DIR) / "var"}:
            problem = disk_problem(shutil.disk_usage(where).free, size)
            if problem is not None:
                raise CommandError(f"{where}: {problem}")
        study, per_instance, parts = big_study(count, sites.a_issuer)
        out = Path(tempfile.mkdtemp(prefix="xds-bench-consumer-big-"))
        self.say(f"[big] study {study}: {count} instances of {per_instance / MB:.2f} MB ({size / 1e9:.2f} GB), "
                 f"STOW-RS into Orthanc A in requests of 40")
        try:
            started = time.perf_counter()
            last = [started]

            def loaded(done: int, sent: int) -> None:
                now = time.perf_counter()
                if now - last[0] >= 10 or done == count:
                    last[0] = now
                    self.say(f"[big]   {done}/{count} instances ({sent / 1e9:.2f} GB) loaded, "
                             f"{sent / MB / (now - started):.0f} MB/s")
            sent = stow(sites.a_dicomweb, parts, batch=40, on_batch=loaded)
            load_seconds = time.perf_counter() - started
            publish_seconds = self.publish_at_a(sites, study)
            rss_start = _own_rss()
            self.say(f"[big] fetching into files at B ({out}); RSS before {rss_start / MB:.0f} MB")
            with RssSampler(0.05) as rss:
                begun = time.perf_counter()
                probe = ProgressProbe(begun, self.say, count)
                destination = FilesDestination(out, writers=FILE_WRITERS)
                seconds, outcome = self.consumer_run(sites, BENCH_PATIENT, study, destination, resolvers,
                                                     syntaxes=transfer_syntaxes(False), timeout=options["timeout"],
                                                     probe=probe, started=begun)
            stored = sum(p.stat().st_size for p in received_files(out))
            figures = {"study_instance_uid": study, "instances": count, "bytes_generated": sent,
                       "bytes_stored_at_b": stored, "instance_bytes": per_instance,
                       "series": math.ceil(count / BIG_PER_SERIES), "load_seconds": round(load_seconds, 1),
                       "publish_seconds": round(publish_seconds, 1), "fetch_seconds": round(seconds, 2),
                       "rad69_seconds": round(outcome.seconds, 2), "mb_per_s": mb_per_s(outcome.bytes, seconds),
                       "time_to_first_instance_seconds": round(probe.first_instance or math.nan, 3),
                       "rss_before_mb": round(rss.before / MB, 1), "rss_peak_mb": round(rss.peak / MB, 1),
                       "rss_growth_mb": round(rss.growth / MB, 1), "rss_samples": rss.samples,
                       "goal_rss_growth_mb": f"< {GOAL_BIG_RSS_GROWTH_MB:g}",
                       "meets_goal": rss.growth / MB < GOAL_BIG_RSS_GROWTH_MB}
            self.say(f"[big] {outcome.retrieved} instances, {outcome.bytes / 1e9:.2f} GB in {seconds:.1f} s "
                     f"({figures['mb_per_s']} MB/s); first instance on disk after "
                     f"{figures['time_to_first_instance_seconds']} s; RSS growth {figures['rss_growth_mb']} MB "
                     f"(peak {figures['rss_peak_mb']} MB, {rss.samples} samples)")
            return figures
        finally:
            shutil.rmtree(out, ignore_errors=True)
            try:
                self.say(f"[big] study removed from Orthanc A ({orthanc_remove(sites.a_dicomweb, study)} study); "
                         "files removed")
            except (requests.RequestException, CommandError) as exc:
                self.stderr.write(f"[big] study {study} left in Orthanc A: {exc}")

    # ------------------------------------------------------------------ report

    @staticmethod
    def goals(figures: dict[str, Any]) -> list[Goal]:
        goals = [Goal("files at B: direct / consumer time", figures["files"]["ratio_direct_over_consumer"], ">=",
                      GOAL_FILES_RATIO),
                 Goal("PACS import at B: direct copy / consumer time", figures["pacs"]["ratio_direct_over_consumer"],
                      ">=", GOAL_PACS_RATIO)]
        for name, study in figures["wan"]["studies"].items():
            if not study.get("informative"):
                goals.append(Goal(f"WAN {name}: compressed / raw RAD-69 time", study["ratio_compressed_over_raw"],
                                  "<=", GOAL_WAN_COMPRESSED_OVER_RAW))
            goals.append(Goal(f"WAN {name}: pixels of the compressed run bit-exact", study["bit_exact"], "==", True))
        big = figures.get("big") or {}
        if not big.get("skipped"):
            goals.append(Goal("big study: consumer RSS growth", big.get("rss_growth_mb"), "<",
                              GOAL_BIG_RSS_GROWTH_MB, "MB"))
        return goals

    @staticmethod
    def table(figures: dict[str, Any], goals: list[Goal]) -> str:
        def yes(met: bool | None) -> str:
            return "n/a" if met is None else ("yes" if met else "NO")

        rows = [["measurement", "consumer", "baseline", "ratio", "goal", "met"]]
        files, pacs = figures["files"], figures["pacs"]
        mb = files["bytes"] / MB
        rows.append([f"files at B, {files['instances']} inst {mb:.1f} MB",
                     f"{files['consumer_seconds_median']:.3f} s {files['consumer_mb_per_s']} MB/s",
                     f"direct WADO-RS {files['direct_seconds_median']:.3f} s {files['direct_mb_per_s']} MB/s",
                     f"{files['ratio_direct_over_consumer']:.2f}", files["goal"], yes(files["meets_goal"])])
        rows.append([f"B's PACS (STOW-RS), {pacs['instances']} inst",
                     f"{pacs['consumer_seconds_median']:.3f} s {pacs['consumer_mb_per_s']} MB/s",
                     f"WADO-RS+STOW-RS {pacs['direct_seconds_median']:.3f} s {pacs['direct_mb_per_s']} MB/s",
                     f"{pacs['ratio_direct_over_consumer']:.2f}", pacs["goal"], yes(pacs["meets_goal"])])
        for name, study in figures["wan"]["studies"].items():
            syntaxes = _syntax_names(study["compressed_transfer_syntaxes_received"])
            rows.append([f"WAN {name} ({study['instances']} inst), compressed vs raw",
                         f"compressed {study['compressed_rad69_seconds_median']:.3f} s [{syntaxes}]",
                         f"raw {study['raw_rad69_seconds_median']:.3f} s",
                         f"{study['ratio_compressed_over_raw']:.2f}",
                         f"({study['goal']})" if study.get("informative") else study["goal"],
                         "info" if study.get("informative") else yes(study["meets_goal"])])
            rows.append([f"WAN {name}: pixels after compress", f"bit_exact={study['bit_exact']}",
                         f"{study['bit_exact_instances_compared']} compared", "", "bit-exact", yes(study["bit_exact"])])
            diag = study["diagnostic_jpegls_only"]
            if "seconds_rad69" in diag:
                ls = _syntax_names(diag["transfer_syntaxes"])
                rows.append(["  (diagnostic: JPEG-LS only asked)", f"{diag['seconds_rad69']:.3f} s [{ls}]",
                             f"raw {study['raw_rad69_seconds_median']:.3f} s",
                             f"{ratio(diag['seconds_rad69'], study['raw_rad69_seconds_median']):.2f}", "-", "-"])
        big = figures.get("big") or {}
        if big.get("skipped"):
            rows.append(["big study", "skipped (--skip-big)", "", "", "", ""])
        else:
            rows.append([f"big study {big['instances']} inst {big['bytes_stored_at_b'] / 1e9:.2f} GB, RSS growth",
                         f"{big['rss_growth_mb']} MB", f"TTFI {big['time_to_first_instance_seconds']} s",
                         f"{big['fetch_seconds']} s {big['mb_per_s']} MB/s", big["goal_rss_growth_mb"] + " MB",
                         yes(big["meets_goal"])])
        met = sum(1 for g in goals if g.met)
        return format_table(rows) + f"\n{met}/{len(goals)} goals met"


__all__ = ["Command", "Goal", "RssSampler", "disk_problem", "format_table", "instances_for", "interleaved",
           "parse_env_text", "ratio", "read_env_file", "vmrss_bytes"]
