"""manage.py xds_bench_imaging: RAD-69 of a 500-instance study vs. WADO-RS straight from the PACS.

Issue 5 benchmark (``make bench-imaging``):

1. generate a CT study of N instances (default 500) from pydicom's ``CT_small.dcm`` with new
   Study/Series/SOP UIDs and load it into the
   PACS by STOW-RS (one request);
2. in the same run, in pairs of alternating order: RAD-69 of all N instances in ONE request
   through the running server (``--url``, real HTTP), and the same N instances fetched
   directly from the PACS by WADO-RS (one series request: what a consumer does with the
   manifest's Retrieve URL).  Both
   answers are multipart/related and both are read the same way - split with the same
   incremental splitter, every part's file meta read and checked against the requested SOP
   Instance UIDs; the RAD-69 SOAP root is also parsed (hardened parser, ebXML response) and
   each xop:Include resolved to its part.  This ``ratio`` compares the two *servers*.
   Also measured: RAD-69 read by the project's :class:`SoapClient` (SHA-1 of every part on the
   fly), and WADO-RS instance by instance, for reference;
3. writes ``var/bench/imaging.json`` with medians, the ratio WADO-RS time / RAD-69 time
   (target >= 0.8) and the KOS build figure from ``var/bench/kos.json`` when present.

The server must use the same PACS (DICOM_PACS / DICOMWEB_URL); it fetches with its own
configured method (``DICOM_FETCH_METHOD``; WADO-RS when DICOMWEB_URL is set).
"""

from __future__ import annotations

import copy
import io
import json
import platform
import re
import statistics
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from atna.tls import new_http_session
from imaging_source.dicom.part10 import read_file_meta
from imaging_source.dicom.wado_rs import iter_multipart, iter_multipart_parts
from xds_core.ebxml.messages import (
    DocumentRequest,
    RetrieveImagingDocumentSetRequest,
    SeriesRequest,
    StudyRequest,
)
from xds_core.ebxml.parse import parse_retrieve_document_set_response
from xds_core.ebxml.serialize import retrieve_imaging_document_set_request
from xds_core.ns import WSA_ANONYMOUS, XDSB
from xds_core.safe_xml import parse_xml, to_bytes
from xds_core.soap.client import SoapClient
from xds_core.soap.envelope import build_envelope
from xds_core.soap.mtom import normalize_cid, parse_content_type, write_message
from xds_core.vocabulary import Action, ResponseStatus

TARGET_RATIO = 0.8
_CID_RE = re.compile(rb"(?im)^content-id:[ \t]*([^\r\n]+)")
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


T = TypeVar("T")


def mtom_root_and_parts(content_type: str, parts: Iterable[tuple[bytes, bytes | memoryview]],
                        each: Callable[[bytes | memoryview], T]) -> tuple[bytes | memoryview, dict[str, T]]:
    """An MTOM answer's SOAP root part and ``each(content)`` of every other part, by Content-ID.

    The root is the part whose Content-ID the Content-Type's ``start`` parameter names, wherever
    it is in the package (RFC 2387 3.2, XOP 1.0 4.1; with or without the angle brackets of a
    msg-id); only when ``start`` is absent is it the first part.  A ``start`` naming no part (or
    an empty one) is a broken answer: CommandError.
    """
    _, params = parse_content_type(content_type)
    start = normalize_cid(params["start"]) if "start" in params else None
    if start == "":
        raise CommandError("RAD-69 answer with an empty start parameter")
    root: bytes | memoryview | None = None
    out: dict[str, T] = {}
    for index, (headers, body) in enumerate(parts):
        match = _CID_RE.search(headers)
        cid = normalize_cid(match.group(1).decode("latin-1")) if match else ""
        if root is None and (cid == start if start is not None else index == 0):
            root = body
        elif cid:
            out[cid] = each(body)
    if root is None:
        raise CommandError(f"RAD-69 answer without its SOAP root: no part has the Content-ID <{start}> named "
                           f"by start" if start is not None else "RAD-69 answer without parts")
    return root, out


def generate_study(n: int) -> tuple[str, str, list[tuple[str, bytes]]]:
    """N copies of CT_small.dcm in one new study/series: (study UID, series UID, [(SOP UID, Part 10)])."""
    source = dcmread(get_testdata_file("CT_small.dcm"))
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(1, n + 1):
        ds = copy.deepcopy(source)
        ds.PatientID, ds.PatientName = "XDSI-BENCH", "Bench^Imaging"
        ds.AccessionNumber = "ACC-BENCH-IMG"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append((ds.SOPInstanceUID, buffer.getvalue()))
    return study, series, out


def stow(base: str, instances: list[tuple[str, bytes]], batch: int = 100) -> None:
    """STOW-RS (PS3.18 10.5) in batches of ``batch`` instances."""
    for start in range(0, len(instances), batch):
        boundary = uuid.uuid4().hex
        body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
                        for _, data in instances[start:start + batch]) + b"--" + boundary.encode() + b"--\r\n"
        response = requests.post(f"{base}/studies", data=body, timeout=300, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json"})
        if response.status_code != 200:
            raise CommandError(f"STOW-RS to {base} failed: HTTP {response.status_code} {response.text[:200]}")
        failed = response.json().get("00081198", {}).get("Value", [])  # empty FailedSOPSequence on success
        if failed:
            raise CommandError(f"STOW-RS refused {len(failed)} instances")


def remove_study(base: str, study_uid: str) -> str:
    """Delete the benchmark's study from the PACS again, so that repeated runs measure the same PACS.

    DICOMweb has no standard delete: Orthanc's REST API (the project's PACS) is tried first
    (``/tools/lookup`` + ``DELETE /studies/{id}`` on the server the DICOMweb base belongs to),
    then ``DELETE {base}/studies/{uid}`` as some archives offer it.  Returns what happened.
    """
    root = base[: -len("/dicom-web")] if base.endswith("/dicom-web") else base
    try:
        found = requests.post(f"{root}/tools/lookup", data=study_uid, timeout=30)
        if found.status_code == 200:
            ids = [hit["ID"] for hit in found.json() if hit.get("Type") == "Study"]
            if ids and all(requests.delete(f"{root}/studies/{i}", timeout=300).status_code == 200 for i in ids):
                return "removed from the PACS (Orthanc REST API)"
        deleted = requests.delete(f"{base}/studies/{study_uid}", timeout=300)
        if deleted.status_code in (200, 202, 204):
            return "removed from the PACS (DELETE on the DICOMweb study)"
        return f"left in the PACS (no delete offered: HTTP {deleted.status_code})"
    except (requests.RequestException, ValueError, KeyError) as exc:
        return f"left in the PACS ({exc})"


class Command(BaseCommand):
    help = "Benchmark RAD-69 (one request, N instances) against direct WADO-RS from the PACS (issue 5)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--url", default=f"http://127.0.0.1:{settings.PORT}",
                            help="base URL of the running server (its /xds/imaging-source endpoint is used)")
        parser.add_argument("--dicomweb", default=settings.DICOMWEB_URL or "http://127.0.0.1:8042/dicom-web",
                            help="DICOMweb base URL of the PACS (load + direct WADO-RS)")
        parser.add_argument("--instances", type=int, default=500)
        parser.add_argument("--repeat", type=int, default=21,
                            help="RAD-69 / WADO-RS pairs measured (medians reported)")
        parser.add_argument("--pause", type=float, default=0.0,
                            help="seconds of idle before each measured request (default: back to back, as a "
                                 "server in use sees them; 0.1 measured 0.80-0.85 against 0.82-0.90 without)")
        parser.add_argument("--output", default=str(Path(settings.VAR_DIR) / "bench" / "imaging.json"))

    def handle(self, *args: Any, **options: Any) -> None:
        n = options["instances"]
        base = options["dicomweb"].rstrip("/")
        endpoint = options["url"].rstrip("/") + "/xds/imaging-source"
        if n < 1 or options["repeat"] < 1:
            raise CommandError("--instances and --repeat must be positive")

        started = time.perf_counter()
        study, series, instances = generate_study(n)
        stow(base, instances)
        load_seconds = time.perf_counter() - started
        total_bytes = sum(len(data) for _, data in instances)
        self.stdout.write(f"loaded {n} instances ({total_bytes / 1e6:.1f} MB) into {base} in {load_seconds:.2f} s")

        try:
            figures = self._measure(options, base, endpoint, study, series, instances, load_seconds)
        finally:
            self.stdout.write(f"benchmark study {study}: {remove_study(base, study)}")
        output = Path(options["output"])
        kos_file = output.with_name("kos.json")
        if kos_file.exists():
            figures["kos_build"] = json.loads(kos_file.read_text())
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(figures, indent=2) + "\n")
        rad, wado = figures["rad69_seconds_median"], figures["wado_rs_series_seconds_median"]
        self.stdout.write(f"RAD-69 {n} instances: {rad:.3f} s median ({figures['rad69_mb_per_s']:.0f} MB/s); "
                          f"WADO-RS series {wado:.3f} s; ratio {figures['ratio_wado_over_rad69']:.2f} "
                          f"(target >= {TARGET_RATIO}); WADO-RS per instance "
                          f"{figures['wado_rs_per_instance_seconds']:.2f} s -> {output}")

    def _measure(self, options: dict[str, Any], base: str, endpoint: str, study: str, series: str,
                 instances: list[tuple[str, bytes]], load_seconds: float) -> dict[str, Any]:
        n, repeat = options["instances"], options["repeat"]
        total_bytes = sum(len(data) for _, data in instances)
        uids = [uid for uid, _ in instances]
        request = retrieve_imaging_document_set_request(RetrieveImagingDocumentSetRequest(
            [StudyRequest(study, [SeriesRequest(series, [DocumentRequest(settings.XDS_IMAGING_SOURCE_ID, uid)
                                                         for uid in uids])])], [ExplicitVRLittleEndian]))
        client = SoapClient(endpoint, timeout=600)
        session = requests.Session()  # WADO-RS straight from the PACS (the baseline)
        session.headers.update({"Accept": WADO_ACCEPT, "Accept-Encoding": "identity"})

        envelope_type, _, envelope_chunks = write_message(to_bytes(build_envelope(
            Action.RetrieveImagingDocumentSet.value, copy.deepcopy(request), to=endpoint,
            message_id=f"urn:uuid:{uuid.uuid4()}", reply_to=WSA_ANONYMOUS)), [],
            action=Action.RetrieveImagingDocumentSet.value)
        envelope = b"".join(envelope_chunks)
        post = new_http_session()  # to our RAD-69 endpoint: https presents this node's certificate (ITI-19)
        post.headers.update({"Content-Type": envelope_type, "Accept-Encoding": "identity"})

        def rad69() -> float:
            """RAD-69 over HTTP, the answer split like WADO-RS's, the SOAP root parsed, parts resolved."""
            t = time.perf_counter()
            response = post.post(endpoint, data=envelope, stream=True, timeout=600)
            content_type = response.headers["Content-Type"]
            # The root is the part named by start= (RFC 2387), first or last.
            root, parts = mtom_root_and_parts(
                content_type, iter_multipart_parts(content_type, response.iter_content(1024 * 1024)),
                lambda body: read_file_meta(body)["MediaStorageSOPInstanceUID"])
            answer = parse_xml(root).find(f".//{{{XDSB}}}RetrieveDocumentSetResponse")
            status, errors, documents = parse_retrieve_document_set_response(answer)
            got = {parts[normalize_cid(d.element[0].get("href"))] for d in documents}
            elapsed = time.perf_counter() - t
            if status != ResponseStatus.SUCCESS.value or got != set(uids):
                raise CommandError(f"RAD-69 answered {status} with {len(got)}/{n} instances: {errors[:3]}")
            return elapsed

        def rad69_soap_client() -> float:
            t = time.perf_counter()
            result = client.call(Action.RetrieveImagingDocumentSet.value, copy.deepcopy(request))
            if result.fault is not None or result.body is None:
                raise CommandError(f"RAD-69 failed: {result.fault or result.http_status}")
            status, errors, documents = parse_retrieve_document_set_response(result.body)
            got = set()
            for document in documents:
                attachment = result.binary(document.element)
                got.add(read_file_meta(attachment.read_bytes())["MediaStorageSOPInstanceUID"])
                attachment.close()
            elapsed = time.perf_counter() - t
            if status != ResponseStatus.SUCCESS.value or got != set(uids):
                raise CommandError(f"RAD-69 answered {status} with {len(got)}/{n} instances: {errors[:3]}")
            return elapsed

        def wado_series() -> float:
            t = time.perf_counter()
            response = session.get(f"{base}/studies/{study}/series/{series}", stream=True, timeout=600)
            parts = [read_file_meta(p)["MediaStorageSOPInstanceUID"] for p in
                     iter_multipart(response.headers["Content-Type"], response.iter_content(1024 * 1024))]
            elapsed = time.perf_counter() - t
            if set(parts) != set(uids):
                raise CommandError(f"WADO-RS returned {len(parts)}/{n} instances")
            return elapsed

        def wado_per_instance() -> float:
            t = time.perf_counter()
            for uid in uids:
                response = session.get(f"{base}/studies/{study}/series/{series}/instances/{uid}", timeout=60)
                if len(list(iter_multipart(response.headers["Content-Type"], iter([response.content])))) != 1:
                    raise CommandError(f"WADO-RS instance {uid} failed")
            return time.perf_counter() - t

        probe = post.post(endpoint, data=envelope, stream=True, timeout=600)
        answer_is_root_last = not next(probe.iter_content(4096)).split(b"\r\n\r\n", 1)[0].lower().count(b"xop+xml")
        probe.close()
        rad69()  # warm-up: first association / connection / page cache
        wado_series()
        rad_times, wado_times, client_times = [], [], []
        pause = options["pause"]

        def settled(measure: Any) -> float:
            if pause:
                time.sleep(pause)
            return measure()

        for i in range(repeat):
            # Pairs in alternating order (ABBA): neither side always runs right after the other.
            if i % 2:
                wado_times.append(settled(wado_series))
                rad_times.append(settled(rad69))
            else:
                rad_times.append(settled(rad69))
                wado_times.append(settled(wado_series))
        for _ in range(max(3, repeat // 3)):  # for reference only, not part of the ratio
            client_times.append(rad69_soap_client())
        per_instance = wado_per_instance()

        rad, wado = statistics.median(rad_times), statistics.median(wado_times)
        ratio = wado / rad
        figures: dict[str, Any] = {
            "benchmark": "rad69_vs_wado_rs",
            "instances": n,
            "bytes": total_bytes,
            "repeat": repeat,
            "pause_seconds": pause,
            "server": endpoint,
            "pacs_dicomweb": base,
            "server_fetch_method": (settings.DICOM_FETCH_METHOD or ("wado-rs" if settings.DICOMWEB_URL else "c-get"))
            + " (as configured for this process; the server's own settings decide)",
            "server_root_last": answer_is_root_last,
            "rad69_seconds_median": round(rad, 4),
            "rad69_seconds_all": [round(x, 4) for x in rad_times],
            "wado_rs_series_seconds_median": round(wado, 4),
            "wado_rs_series_seconds_all": [round(x, 4) for x in wado_times],
            "rad69_soap_client_seconds_median": round(statistics.median(client_times), 4),
            "ratio_wado_over_rad69_soap_client": round(wado / statistics.median(client_times), 3),
            "wado_rs_per_instance_seconds": round(per_instance, 4),
            "ratio_wado_over_rad69": round(ratio, 3),
            "ratio_per_instance_wado_over_rad69": round(per_instance / rad, 3),
            "rad69_mb_per_s": round(total_bytes / rad / 1e6, 1),
            "target_ratio": TARGET_RATIO,
            "meets_target": ratio >= TARGET_RATIO,
            "load_seconds": round(load_seconds, 3),
            "python": platform.python_version(),
            "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return figures
