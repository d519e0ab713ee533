"""Fetching from the PACS by WADO-RS (DICOM PS3.18 10.4): one request per series, streamed.

The answer is read in 1 MiB chunks and split without copying (:func:`xds_core.multipart.iter_parts`):
each instance is a view into the chunk it arrived in and is yielded as soon as its part is complete.
A series of at most :data:`WADO_PER_INSTANCE_MAX` requested instances is fetched instance by instance.

Time rules (:class:`~imaging_source.dicom.instances.PacsDeadlines`, issue 15): the status line must
begin within ``first_byte`` seconds of the request being sent (counted from the send, so a request
sent ahead has used part of it already), and each later receive of the answer within ``idle``
seconds - socket timeouts, so a slow but moving WAN transfer of any size passes while a PACS that
stopped answering costs one deadline, not minutes.  Either expiry raises
:class:`~imaging_source.dicom.instances.PacsTimeout`, which ends the whole fetch.
"""

from __future__ import annotations

import base64
import http.client
import logging
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from urllib.parse import SplitResult, unquote, urlsplit

from imaging_source.access import NotADicomUid, pacs_path_segment
from imaging_source.dicom.config import DicomConfig, FetchMethod
from imaging_source.dicom.instances import (
    DEFAULT_DEADLINES,
    Collector,
    FetchedInstance,
    FetchError,
    PacsDeadlines,
    PacsTimeout,
    SeriesFetch,
    checked_uids,
)
from xds_core.log_ref import redact
from xds_core.multipart import MultipartError, boundary_of, iter_parts, read_chunks

logger = logging.getLogger(__name__)

#: A series request with at most this many instances is fetched instance by instance by WADO-RS
#: (cheaper than pulling a possibly large series to keep a few instances).
WADO_PER_INSTANCE_MAX = 4
#: How many of a series' SOP Instance UIDs decide its first WADO-RS request (:func:`send_ahead`):
#: beyond WADO_PER_INSTANCE_MAX the request is the whole series, whatever the rest are.
AHEAD_UIDS = WADO_PER_INSTANCE_MAX + 1

#: Originals, whatever their transfer syntax (PS3.18 8.7.3.5.2: ``transfer-syntax=*``);
#: without it Orthanc transcodes compressed instances to Explicit VR Little Endian.
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'

#: Answers to a request naming one transfer syntax that mean "not that one": 406 Not Acceptable
#: (PS3.18 8.7.3.5 / 10.4.3), 400 (Orthanc 1.10.1 for a syntax it does not know), 500/501 (Orthanc
#: 1.10.1 for a syntax it cannot encode - JPEG 2000, RLE, JPEG Baseline: "Error encountered within
#: the plugin engine", measured).  The request is then sent again with :data:`WADO_ACCEPT`.
REFUSED_STATUSES = frozenset({400, 406, 500, 501})
#: Seconds a PACS's refusal of a transfer syntax is remembered (asked with ``*`` meanwhile).
REFUSAL_MEMORY = 600.0
#: (PACS base URL, transfer syntax) -> when the PACS refused it.
_refused: dict[tuple[str, str], float] = {}


def wado_accept(transfer_syntax: str | None) -> str:
    """The Accept of a WADO-RS instances request: the instances in ``transfer_syntax`` (the PACS
    transcodes), or as stored (``None`` -> ``transfer-syntax=*``), PS3.18 8.7.3.5.2."""
    if transfer_syntax is None:
        return WADO_ACCEPT
    return f'multipart/related; type="application/dicom"; transfer-syntax={transfer_syntax}'


def _asked_syntax(base: SplitResult, transfer_syntax: str | None) -> str | None:
    """``transfer_syntax`` unless this PACS refused it lately (then None: as stored)."""
    if transfer_syntax is None:
        return None
    when = _refused.get((base.geturl(), transfer_syntax))
    if when is not None and time.monotonic() - when < REFUSAL_MEMORY:
        return None
    return transfer_syntax


def _wado_targets(base: SplitResult, item: SeriesFetch) -> list[str]:
    """The WADO-RS paths for one series: the series (PS3.18 10.4.1), or its few instances one by one."""
    checked_uids(item, instances=len(item.sop_instance_uids) <= WADO_PER_INSTANCE_MAX)
    # Defence in depth behind the access gate (imaging_source.access): each path segment is a DICOM UID
    # (PS3.5 §9.1) or this raises, and it is percent-encoded (quote(safe="")) on its way into the URL.
    try:
        path = (f"{base.path}/studies/{pacs_path_segment(item.study_instance_uid)}"
                f"/series/{pacs_path_segment(item.series_instance_uid)}")
        if len(item.sop_instance_uids) <= WADO_PER_INSTANCE_MAX:
            return [f"{path}/instances/{pacs_path_segment(sop)}" for sop in item.sop_instance_uids]
    except NotADicomUid as exc:
        raise FetchError(str(exc)) from exc
    return [path]


def fetch_wado(config: DicomConfig, series: Sequence[SeriesFetch], collector: Collector,
                ahead: _WadoGet | None = None, transfer_syntax: str | None = None,
                deadlines: PacsDeadlines = DEFAULT_DEADLINES) -> Iterator[tuple[tuple[str, str], FetchedInstance]]:
    """Generator: each kept instance with its key as soon as its part is in, while the PACS sends the rest.

    The answer is read in 1 MiB ``readinto`` chunks and split without copying the parts
    (:func:`xds_core.multipart.iter_parts`): each instance is a view into the
    chunk it arrived in, passed on as is when no transcoding is needed.  ``ahead``: the
    request for the first target, already sent (:func:`send_ahead`).  ``transfer_syntax``: ask the
    PACS for the instances in it (:func:`wado_accept`); when the PACS refuses
    (:data:`REFUSED_STATUSES`) the request goes again for the instances as stored, and so do
    the fetch's next ones.  Either way the caller checks each instance's transfer syntax.
    ``deadlines``: :class:`PacsTimeout` when the PACS does not begin an answer in time or stalls
    within one (the connection is dropped; nothing half-read stays in the pool).
    """
    base = urlsplit(config.dicomweb_url.rstrip("/"))
    asked = _asked_syntax(base, transfer_syntax)
    first = _wado_targets(base, series[0])[0] if series else None
    if ahead is not None and (ahead.base != base or ahead.path != first or ahead.accept != wado_accept(asked)
                              or ahead.deadlines != deadlines):
        ahead.cancel()  # the request sent ahead is not this fetch's first one after all
        ahead = None
    for item in series:
        for target in _wado_targets(base, item):
            try:
                if ahead is not None:
                    request, ahead = ahead, None
                else:
                    request = _WadoGet(base, target, wado_accept(asked), deadlines, config.tls)
                response = request.response()
                if asked is not None and response.status in REFUSED_STATUSES:
                    logger.info("WADO-RS: the PACS answered %d to transfer-syntax=%s; asking for the instances"
                                " as stored (transcoded here)", response.status, asked)
                    _refused[(base.geturl(), asked)] = time.monotonic()
                    asked = None
                    response.read()  # a small error body: read, so the connection can be kept
                    _wado_release(base, response)
                    response = _WadoGet(base, target, WADO_ACCEPT, deadlines, config.tls).response()
            except TimeoutError as exc:  # connect or send: the PACS takes no request (OSError, but a time rule)
                raise PacsTimeout(f"WADO-RS: the PACS did not take the request within {deadlines.first_byte:g} s"
                                  f" ({exc})") from exc
            except (OSError, http.client.HTTPException) as exc:
                collector.result.failures[item.series_instance_uid] = f"WADO-RS: {exc}"
                continue
            try:
                if response.status == 404:
                    continue  # nothing of it there: reported per instance as missing
                if response.status != 200:
                    collector.result.failures[item.series_instance_uid] = f"WADO-RS HTTP {response.status}"
                    continue
                # WADO-RS answers with the instances of the addressed series only (PS3.18 10.4.1).
                boundary = boundary_of(response.getheader("Content-Type", ""))
                series_uid, study_uid = item.series_instance_uid, item.study_instance_uid
                for _headers, body in iter_parts(boundary, read_chunks(response)):
                    instance = collector.add(body, series_uid, study_uid=study_uid)
                    if instance is not None:
                        yield (series_uid, instance.sop_instance_uid), instance
            except TimeoutError as exc:  # a receive of the answer waited longer than ``idle``
                raise PacsTimeout(f"WADO-RS: the PACS stopped sending for {deadlines.idle:g} s in the middle of"
                                  " its answer") from exc
            except (MultipartError, OSError, http.client.HTTPException) as exc:
                raise FetchError(f"WADO-RS answer for series {item.series_instance_uid} unusable: {exc}") from exc
            finally:
                _wado_release(base, response)


#: One HTTP connection per PACS and thread, reused across requests when the PACS keeps it
#: open (Orthanc closes after a multipart answer - ``Connection: close`` - so there a new
#: one is opened per request; reuse pays for PACSs that keep alive).
_connections = threading.local()


def _wado_connection(base: SplitResult, tls: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    """This thread's connection to the PACS at ``base``; an ``https`` one presents our certificate and
    verifies the PACS's with ``tls`` (ITI-19; the node's client context, DicomConfig.tls)."""
    pool: dict[str, http.client.HTTPConnection] = _connections.__dict__.setdefault("pool", {})
    key = f"{base.scheme}://{base.netloc}"
    connection = pool.get(key)
    if connection is None:
        if base.scheme == "https":
            connection = http.client.HTTPSConnection(base.hostname or "127.0.0.1", base.port, context=tls)
        else:
            connection = http.client.HTTPConnection(base.hostname or "127.0.0.1", base.port)
        pool[key] = connection
    return connection


def send_ahead(config: DicomConfig, item: SeriesFetch, transfer_syntax: str | None = None,
               deadlines: PacsDeadlines = DEFAULT_DEADLINES) -> RequestAhead | None:
    """Ask the PACS for ``item`` now; pass the result to :class:`FetchStream` (``ahead=``), which reads it.

    A PACS takes a while before the first byte of a series (Orthanc: ~20 ms for 500
    instances, looking them up), and the caller still has work to do before it fetches
    (a RAD-69 request's per-document checks, the answer's setup and headers): sent ahead,
    the request has the PACS working in the meantime.  WADO-RS only (a DIMSE retrieve needs
    its association served while it runs): None otherwise, or when the request cannot be
    sent now - the fetch then sends it again and reports any failure.  ``item`` needs only
    its first :data:`AHEAD_UIDS` SOP Instance UIDs; ``transfer_syntax`` is the fetch's own
    (:func:`fetch_wado`), and so are ``deadlines`` (the first byte is due ``first_byte`` seconds after
    this send).  A request the fetch does not use (its first series or its Accept
    turned out different) is cancelled by the fetch; :meth:`RequestAhead.cancel` drops one that
    never reaches a fetch.
    """
    if config.fetch_method != FetchMethod.WADO_RS or not config.dicomweb_url or not item.sop_instance_uids:
        return None
    base = urlsplit(config.dicomweb_url.rstrip("/"))
    try:
        return _WadoGet(base, _wado_targets(base, item)[0], wado_accept(_asked_syntax(base, transfer_syntax)),
                        deadlines, config.tls)
    except FetchError as exc:  # not a UID: the retrieval refuses it per document, nothing to send
        logger.info("WADO-RS request not sent ahead: %s", redact(exc))
        return None
    except (OSError, http.client.HTTPException) as exc:
        logger.info("WADO-RS request could not be sent ahead (sent again when fetched): %s", redact(exc))
        return None


class _WadoGet:
    """One WADO-RS GET: sent when made, its answer read by :meth:`response`.

    A kept-alive connection the PACS has meanwhile closed fails either when the request is
    sent or when the answer is read; either way the request is sent once more on a fresh
    connection.  A timeout is not that (a closed connection fails at once): it is not retried.
    """

    def __init__(self, base: SplitResult, path: str, accept: str = WADO_ACCEPT,
                 deadlines: PacsDeadlines = DEFAULT_DEADLINES, tls: ssl.SSLContext | None = None) -> None:
        self.base = base
        self.tls = tls
        self.path = path
        self.accept = accept
        self.deadlines = deadlines
        self.connection, self.reused = self._send()

    def _send(self) -> tuple[http.client.HTTPConnection, bool]:
        headers = {"Accept": self.accept, "Accept-Encoding": "identity"}  # identity: no gzip of 20 MB of pixels
        if self.base.username:
            token = base64.b64encode(
                f"{unquote(self.base.username)}:{unquote(self.base.password or '')}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        for attempt in (1, 2):
            connection = _wado_connection(self.base, self.tls)
            reused = connection.sock is not None
            try:
                if not reused:
                    # The TCP handshake is the PACS's first answer too (a stopped PACS's kernel still
                    # completes it from the listen backlog; a dead host does not).
                    connection.timeout = min(WADO_CONNECT_TIMEOUT, self.deadlines.first_byte)
                    connection.connect()
                assert connection.sock is not None
                connection.sock.settimeout(self.deadlines.first_byte)
                connection.request("GET", self.path, headers=headers)
                self.sent_at = time.monotonic()
                return connection, reused
            except TimeoutError:
                connection.close()
                raise
            except (OSError, http.client.HTTPException):
                connection.close()
                if not reused or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def response(self) -> http.client.HTTPResponse:
        """The answer's status and headers: due ``first_byte`` seconds after the send; the body's
        reads then wait at most ``idle`` seconds each.  :class:`PacsTimeout` when late."""
        try:
            return self._answer()
        except PacsTimeout:
            raise
        except (OSError, http.client.HTTPException):
            self.connection.close()
            if not self.reused:
                raise
        self.connection, self.reused = self._send()
        return self._answer()

    def _answer(self) -> http.client.HTTPResponse:
        sock = self.connection.sock
        if sock is not None:
            # The rest of the first-byte deadline (a request sent ahead has used part of it).
            sock.settimeout(max(self.deadlines.first_byte - (time.monotonic() - self.sent_at), 0.001))
        try:
            response = self.connection.getresponse()
        except TimeoutError as exc:
            self.connection.close()
            raise PacsTimeout(f"WADO-RS: no answer from the PACS within {self.deadlines.first_byte:g} s") from exc
        if sock is not None:
            # getresponse() hands a closing connection's socket over to the response (connection.sock
            # is then None): the socket object from before still sets its timeout.
            sock.settimeout(self.deadlines.idle)
        return response

    def cancel(self) -> None:
        self.connection.close()


#: What :func:`send_ahead` returns: a request on its way, to hand to a fetch or cancel.
RequestAhead = _WadoGet


def _wado_release(base: SplitResult, response: http.client.HTTPResponse) -> None:
    """Keep the connection only if the answer was read to its end and the PACS keeps it alive."""
    if not response.isclosed() or response.will_close:
        response.close()
        pool: dict[str, http.client.HTTPConnection] = _connections.__dict__.setdefault("pool", {})
        connection = pool.get(f"{base.scheme}://{base.netloc}")
        if connection is not None:
            connection.close()


#: Seconds to connect to the PACS (at most; the first-byte deadline when it is shorter).  Reads wait
#: per :class:`PacsDeadlines`.
WADO_CONNECT_TIMEOUT = 10


def iter_multipart(content_type: str, chunks: Iterator[bytes]) -> Iterator[memoryview]:
    """Yield the bodies of a ``multipart/related`` stream (RFC 2046 5.1) as they complete."""
    for _headers, body in iter_multipart_parts(content_type, chunks):
        yield body


def iter_multipart_parts(content_type: str, chunks: Iterator[bytes]) -> Iterator[tuple[bytes, memoryview]]:
    """Yield ``(raw header block, body)`` of each part of a ``multipart/related`` stream.

    A thin wrapper of the one splitter, :func:`xds_core.multipart.iter_parts`:
    each body is a view into the chunk it arrived in (no copy of 20 MB of pixels for a
    caller that only looks at them), valid as long as the caller keeps it; ``bytes(body)``
    for a copy.  Errors become :class:`FetchError`.
    """
    try:
        boundary = boundary_of(content_type)
    except MultipartError as exc:
        raise FetchError(f"WADO-RS answer is not multipart: {content_type!r}") from exc
    try:
        yield from iter_parts(boundary, chunks)
    except MultipartError as exc:
        raise FetchError(str(exc)) from exc
