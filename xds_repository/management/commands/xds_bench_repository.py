"""Benchmark a running Document Repository over HTTP (issue #4 item 6; `make bench-repository`).

Figures:

- ITI-41 Provide and Register of small (10 kB) documents per second with N clients;
- ITI-41 and ITI-43 of one large (1 GB) document: MB/s each way and the peak
  RSS growth of the server's gunicorn processes (/proc/<pid>/status VmHWM,
  reset through /proc/<pid>/clear_refs before each transfer, VmRSS sampled as
  a fallback);
- a plain file copy of the same size on this machine, and our ratio to it.

Targets (issue #4): 1 GB in and out with < 100 MB RSS growth; >= 150 MB/s each
way on loopback; >= 150 small Provide-and-Register/s.  Writes
``var/bench/repository.json`` and prints the figures.

The registry must know the patient: ``--patient-id`` is fed first through
ITI-8 (HL7 v2 ADT^A04 over MLLP, ``--hl7``) unless ``--no-feed``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from atna.tls import node_client_context
from xds_core import mllp
from xds_core.bench import server_pids
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.messages import DocumentRequest
from xds_core.ebxml.responses import parse_registry_response
from xds_core.metadata.objects import Association, DocumentEntry, Submission, SubmissionSet
from xds_core.metadata.values import Code
from xds_core.safe_xml import to_bytes
from xds_core.soap.envelope import build_envelope, parse_envelope
from xds_core.soap.mtom import OutgoingPart, write_message
from xds_core.soap.mtom_reader import read_message
from xds_core.vocabulary import Action, ResponseStatus

MB = 1_000_000
TARGETS = {"small_per_second": 150.0, "large_mb_per_second": 150.0, "rss_growth_mb": 100.0}


def _oid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def _submission(patient_id: str, mime_type: str, count: int = 1) -> tuple[Submission, list[DocumentEntry]]:
    ss = SubmissionSet.build(patient_id=patient_id, unique_id=_oid(), source_id="1.3.6.1.4.1.21367.13.70.998",
                             submission_time=time.strftime("%Y%m%d%H%M%S", time.gmtime()),
                             content_type_code=Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study"))
    entries = [DocumentEntry.build(
        patient_id=patient_id, unique_id=_oid(), mime_type=mime_type,
        class_code=Code("REPORTS", "1.3.6.1.4.1.19376.1.2.6.1", "Reports"),
        type_code=Code("18748-4", "2.16.840.1.113883.6.1", "Diagnostic imaging study"),
        format_code=Code("urn:ihe:iti:xds:2017:mimeTypeSufficient", "1.3.6.1.4.1.19376.1.2.3", "mimeType Sufficient"),
        healthcare_facility_type_code=Code("225732001", "2.16.840.1.113883.6.96", "Hospital"),
        practice_setting_code=Code("394914008", "2.16.840.1.113883.6.96", "Radiology"),
        confidentiality_codes=[Code("N", "2.16.840.1.113883.5.25", "normal")],
        creation_time=time.strftime("%Y%m%d%H%M%S", time.gmtime()), language_code="en-US",
        source_patient_id=patient_id, title="benchmark document") for _ in range(count)]
    return Submission(submission_set=ss, document_entries=entries,
                      associations=[Association.has_member(ss.id, e.id) for e in entries]), entries


def _provide_and_register(patient_id: str, part: OutgoingPart,
                          mime_type: str) -> tuple[str, int | None, Iterator[bytes], str]:
    submission, entries = _submission(patient_id, mime_type)
    body = ebxml_serialize.provide_and_register_request(submission, [(entries[0].id, part.content_id)])
    envelope = build_envelope(Action.ProvideAndRegisterDocumentSet, body)
    content_type, length, chunks = write_message(to_bytes(envelope), [part],
                                                 action=Action.ProvideAndRegisterDocumentSet)
    return content_type, length, chunks, entries[0].unique_id or ""


class _Peer:
    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CommandError(f"--url must be an http(s):// URL of a running server, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self.base = parts.path.rstrip("/")
        self.timeout = timeout
        # https: this node's certificate is presented (XDS_TLS*), as the actors' own clients do (ITI-19).
        self.context = node_client_context() if parts.scheme == "https" else None
        if parts.scheme == "https" and self.context is None:
            raise CommandError("an https:// --url needs XDS_TLS=on with this node's certificate (XDS_TLS_CERT ...)")

    def connect(self) -> http.client.HTTPConnection:
        conn = (http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
                if self.context is not None else http.client.HTTPConnection(self.host, self.port, timeout=self.timeout))
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def post(self, conn: http.client.HTTPConnection, path: str, content_type: str, length: int | None,
             chunks: Iterator[bytes] | bytes) -> http.client.HTTPResponse:
        headers = {"Content-Type": content_type}
        if length is not None:
            headers["Content-Length"] = str(length)
        conn.request("POST", self.base + path, body=chunks, headers=headers, encode_chunked=length is None)
        return conn.getresponse()


def _registry_status(response: http.client.HTTPResponse) -> tuple[str, str]:
    data = response.read()
    message = read_message(response.getheader("Content-Type", ""), _BytesStream(data), content_length=len(data),
                           max_size=1 << 26, max_xml_size=1 << 26)
    request = parse_envelope(message)
    status, errors = parse_registry_response(request.body)
    return status, "; ".join(f"{e.error_code}: {e.code_context}" for e in errors)


class _BytesStream:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        chunk = self.data[self.pos:end]
        self.pos += len(chunk)
        return chunk


# --- server memory -------------------------------------------------------------------------

def _status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class _RssWatch:
    """Peak RSS growth of a set of processes over one transfer."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.baseline = {pid: _status_kb(pid, "VmRSS") or 0 for pid in pids}
        self.hwm_reset = True
        for pid in pids:
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM (Linux >= 4.0)
            except OSError:
                self.hwm_reset = False
        self.sampled = dict(self.baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            for pid in self.pids:
                rss = _status_kb(pid, "VmRSS")
                if rss is not None and rss > self.sampled.get(pid, 0):
                    self.sampled[pid] = rss

    def growth_mb(self) -> float | None:
        self._stop.set()
        self._thread.join()
        if not self.pids:
            return None
        growth = 0
        for pid in self.pids:
            peak = self.sampled.get(pid, 0)
            if self.hwm_reset:
                peak = max(peak, _status_kb(pid, "VmHWM") or 0)
            growth = max(growth, peak - self.baseline[pid])
        return round(growth * 1024 / MB, 1)


# --- content --------------------------------------------------------------------------------

def _large_content(size: int, seed: bytes) -> tuple[Any, str]:
    """A reproducible pseudo-random stream of ``size`` bytes (never held whole) and its SHA-1."""
    block = hashlib.sha512(seed).digest() * (1 << 14)  # 1 MiB

    def chunks() -> Iterator[bytes]:
        left, counter = size, 0
        while left > 0:
            counter += 1
            chunk = counter.to_bytes(8, "big") + block[8:]
            piece = chunk[:left]
            left -= len(piece)
            yield piece

    digest = hashlib.sha1()
    for piece in chunks():
        digest.update(piece)
    return chunks, digest.hexdigest()


class Command(BaseCommand):
    help = "Benchmark ITI-41 / ITI-43 of a running repository (writes var/bench/repository.json)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default=f"http://127.0.0.1:{settings.PORT}",
                            help="Base URL of the running server (default http://127.0.0.1:$PORT).")
        parser.add_argument("--clients", type=int, default=8)
        parser.add_argument("--small-count", type=int, default=1000, help="Small ITI-41 requests to send.")
        parser.add_argument("--small-size", type=int, default=10_000)
        parser.add_argument("--large-size", type=int, default=1_000_000_000, help="Bytes of the large document.")
        parser.add_argument("--repository-id", default=settings.XDS_REPOSITORY_UNIQUE_ID)
        parser.add_argument("--patient-id", default="BENCH-1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO")
        parser.add_argument("--hl7", default=f"127.0.0.1:{settings.HL7_PORT}",
                            help="host:port of the ITI-8 MLLP feed used to make the patient known.")
        parser.add_argument("--no-feed", action="store_true", help="Do not send ITI-8 first.")
        parser.add_argument("--server-pid", type=int, action="append", default=[],
                            help="Server process ids to watch (default: the processes listening on the URL's port).")
        parser.add_argument("--output", default=str(Path(settings.VAR_DIR) / "bench" / "repository.json"))
        parser.add_argument("--timeout", type=float, default=3600.0)

    def handle(self, *args: Any, **opts: Any) -> None:
        peer = _Peer(opts["url"], opts["timeout"])
        if not opts["no_feed"]:
            self._feed_patient(opts["hl7"], opts["patient_id"])
        pids = opts["server_pid"] or server_pids(peer.port, workers_only=False)
        results: dict[str, Any] = {"url": opts["url"], "server_pids": pids, "targets": TARGETS,
                                   "machine": {"cpus": os.cpu_count()}}
        results["small"] = self._small(peer, opts)
        self._line(f"ITI-41 small ({opts['small_size']} B, {opts['clients']} clients): "
                   f"{results['small']['per_second']} /s ({results['small']['failures']} failures)")
        large = self._large(peer, opts, pids)
        results["large"] = large
        self._line(f"ITI-41 {opts['large_size']} B: {large['in_mb_per_second']} MB/s, server RSS growth "
                   f"{large['in_rss_growth_mb']} MB")
        self._line(f"ITI-43 {opts['large_size']} B: {large['out_mb_per_second']} MB/s, server RSS growth "
                   f"{large['out_rss_growth_mb']} MB")
        results["file_copy"] = self._file_copy(opts["large_size"])
        copy_rate = results["file_copy"]["mb_per_second"]
        results["ratio_to_file_copy"] = {
            "in": round(large["in_mb_per_second"] / copy_rate, 3) if copy_rate else None,
            "out": round(large["out_mb_per_second"] / copy_rate, 3) if copy_rate else None,
        }
        self._line(f"plain file copy {opts['large_size']} B: {copy_rate} MB/s; ours/copy: in "
                   f"{results['ratio_to_file_copy']['in']}, out {results['ratio_to_file_copy']['out']}")
        results["targets_met"] = {
            "small_per_second": results["small"]["per_second"] >= TARGETS["small_per_second"],
            "large_in": large["in_mb_per_second"] >= TARGETS["large_mb_per_second"],
            "large_out": large["out_mb_per_second"] >= TARGETS["large_mb_per_second"],
            "rss": all(v is not None and v < TARGETS["rss_growth_mb"]
                       for v in (large["in_rss_growth_mb"], large["out_rss_growth_mb"])),
        }
        output = Path(opts["output"])
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
        self._line(f"written {output}")

    def _line(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    # --- ITI-8 ---------------------------------------------------------------------------
    def _feed_patient(self, address: str, patient_id: str) -> None:
        host, _, port = address.rpartition(":")
        now = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        segments = [
            f"MSH|^~\\&|XDS_BENCH|BENCH|XDS_REGISTRY|XDS|{now}||ADT^A04^ADT_A01|{uuid.uuid4().hex[:20]}|P|2.3.1",
            f"EVN|A04|{now}",
            f"PID|||{patient_id}||BENCH^PATIENT||19700101|O",
            "PV1||O",
        ]
        try:
            answer = mllp.exchange(host, int(port), ("\r".join(segments) + "\r").encode(), timeout=10,
                                   ssl_context=node_client_context())
        except (OSError, mllp.MllpError) as exc:
            self.stderr.write(f"ITI-8 feed to {address} failed ({exc}); the registry must already know "
                              f"{patient_id}")
            return
        if b"MSA|AA" not in answer and b"MSA|CA" not in answer:
            self.stderr.write(f"ITI-8 feed not acknowledged: {answer[:200]!r}")

    # --- small documents ---------------------------------------------------------------------
    def _small(self, peer: _Peer, opts: dict[str, Any]) -> dict[str, Any]:
        count, clients = opts["small_count"], opts["clients"]
        payloads = []
        for _ in range(count):  # built before timing: the figure is the server's
            part = OutgoingPart(f"{uuid.uuid4().hex}@bench", "text/plain", os.urandom(opts["small_size"]))
            content_type, length, chunks, _uid = _provide_and_register(opts["patient_id"], part, "text/plain")
            payloads.append((content_type, b"".join(chunks)))
        failures: list[str] = []
        lock = threading.Lock()
        next_index = iter(range(count))

        def worker() -> None:
            conn = peer.connect()
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    break
                content_type, data = payloads[index]
                try:
                    response = peer.post(conn, "/xds/repository", content_type, len(data), data)
                    status, errors = _registry_status(response)
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = peer.connect()
                    status, errors = "transport", str(exc)
                if status != ResponseStatus.SUCCESS:
                    with lock:
                        failures.append(errors)
            conn.close()

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            for future in [pool.submit(worker) for _ in range(clients)]:
                future.result()
        elapsed = time.perf_counter() - started
        if failures:
            self.stderr.write(f"{len(failures)} small ITI-41 failed, e.g. {failures[0]}")
        return {"count": count, "clients": clients, "size": opts["small_size"], "seconds": round(elapsed, 3),
                "per_second": round((count - len(failures)) / elapsed, 1), "failures": len(failures)}

    # --- one large document --------------------------------------------------------------------
    def _large(self, peer: _Peer, opts: dict[str, Any], pids: list[int]) -> dict[str, Any]:
        size = opts["large_size"]
        chunks_of, sha1 = _large_content(size, uuid.uuid4().bytes)
        part = OutgoingPart(f"{uuid.uuid4().hex}@bench", "application/octet-stream", chunks_of, size=size)
        content_type, length, body, unique_id = _provide_and_register(
            opts["patient_id"], part, "application/octet-stream")
        watch = _RssWatch(pids)
        conn = peer.connect()
        started = time.perf_counter()
        response = peer.post(conn, "/xds/repository", content_type, length, body)
        status, errors = _registry_status(response)
        in_seconds = time.perf_counter() - started
        in_rss = watch.growth_mb()
        conn.close()
        if status != ResponseStatus.SUCCESS:
            raise CommandError(f"large ITI-41 failed: {status} {errors}")

        request = ebxml_serialize.retrieve_document_set_request([DocumentRequest(opts["repository_id"], unique_id)])
        xml = to_bytes(build_envelope(Action.RetrieveDocumentSet, request))
        ctype = f'application/soap+xml; charset=UTF-8; action="{Action.RetrieveDocumentSet}"'
        watch = _RssWatch(pids)
        conn = peer.connect()
        started = time.perf_counter()
        response = peer.post(conn, "/xds/repository", ctype, len(xml), xml)
        with tempfile.TemporaryDirectory(prefix="xds-bench-") as spool:
            length_header = response.getheader("Content-Length")
            message = read_message(response.getheader("Content-Type", ""), response,
                                   content_length=int(length_header) if length_header else None,
                                   max_size=size + (1 << 26), max_xml_size=1 << 26, spool_dir=spool)
            out_seconds = time.perf_counter() - started
            out_rss = watch.growth_mb()
            got = list(message.attachments.values())
            ok = len(got) == 1 and got[0].sha1 == sha1 and got[0].size == size
            message.close()
        conn.close()
        if not ok:
            raise CommandError("large ITI-43 did not return the stored document intact")
        return {"size": size, "in_seconds": round(in_seconds, 3), "out_seconds": round(out_seconds, 3),
                "in_mb_per_second": round(size / MB / in_seconds, 1),
                "out_mb_per_second": round(size / MB / out_seconds, 1),
                "in_rss_growth_mb": in_rss, "out_rss_growth_mb": out_rss, "sha1": sha1}

    def _file_copy(self, size: int) -> dict[str, Any]:
        """A plain copy of a file of ``size`` bytes in the document directory, fsynced."""
        directory = Path(settings.XDS_DOCUMENT_DIR)
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory, prefix=".bench-") as tmp:
            source, target = Path(tmp) / "source", Path(tmp) / "target"
            chunks_of, _ = _large_content(size, b"file-copy")
            with open(source, "wb") as fh:
                for piece in chunks_of():
                    fh.write(piece)
            started = time.perf_counter()
            shutil.copyfile(source, target)
            with open(target, "rb") as fh:
                os.fsync(fh.fileno())
            elapsed = time.perf_counter() - started
        return {"size": size, "seconds": round(elapsed, 3), "mb_per_second": round(size / MB / elapsed, 1)}
