"""The single HTTP <-> SOAP boundary of every actor.

One :class:`XdsEndpoint` per actor (``registry``, ``repository``,
``imaging-source``) is mounted by the app's ``urls.py``.  A POST is read as a
stream straight from ``wsgi.input`` (MTOM parts spill to disk), checked as a
SOAP 1.2 / WS-Addressing message and dispatched on ``wsa:Action`` to the
actor's operations (the ``EndpointSpec`` each actor declares in its
``soap_operations`` module).  This module is the ONE place that turns
errors into answers:

* envelope / transport problems -> SOAP 1.2 Fault (:mod:`xds_core.soap.faults`);
* :class:`~xds_core.errors.XdsError` from a handler -> a Failure response of
  the operation's body kind with a RegistryErrorList (never a fault, ITI TF-2x V.3 / ITI TF-3 4.2.4);
* any other exception -> logged with its traceback and answered with the
  actor's internal error code (XDSRegistryError / XDSRepositoryError).

Request-size policy: a body larger than ``XDS_MAX_REQUEST_SIZE`` (or a SOAP
part larger than ``XDS_MAX_XML_SIZE``, or with more markup than ``XDS_MAX_XML_NODES``
elements and attributes) is refused with HTTP **413** carrying a SOAP Sender fault.
Reading stops at the limit; up to :data:`DRAIN_LIMIT` further bytes are then
read and discarded so that the client, still sending, gets to read the answer
instead of a connection reset.  MTOM parts spill to disk once the request holds
``XDS_MTOM_MEMORY_BUDGET`` of them in memory.

Every transaction logs exactly one line on the ``xds.transaction`` logger, and -- when an audit
sink is installed -- records exactly one :class:`~xds_core.audit.AuditEvent`: this endpoint knows
the peer, the transaction and how the answer ended; the operation adds the patient and objects
(:func:`xds_core.audit.describe`).  Under TLS the record's requestor carries the peer's node identity and
certificate subject, read here at the edge from the request (the web worker and ``atna.middleware`` put them).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import quote, urlsplit

from django.conf import settings
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
    HttpResponseNotFound,
    StreamingHttpResponse,
)
from lxml import etree

from xds_core import audit, ns
from xds_core.ebxml.responses import adhoc_query_response, registry_response, retrieve_document_set_response
from xds_core.errors import ErrorCode, RegistryError, XdsError
from xds_core.http.direct_write import ENVIRON_KEY as DIRECT_WRITER_KEY
from xds_core.http.direct_write import DirectWriter
from xds_core.identity import Identity, PeerCertificate
from xds_core.ns import q
from xds_core.safe_xml import DEFAULT_MAX_XML_NODES, parse_xml, to_bytes
from xds_core.soap.envelope import SoapRequest, SoapResponse, parse_envelope, render_fault
from xds_core.soap.faults import SoapFault
from xds_core.soap.mtom import DEFAULT_MEMORY_BUDGET, BodyChunk, IncomingMessage, MessageTooLarge, MtomError, joined
from xds_core.soap.mtom_reader import read_message
from xds_core.tls import ENVIRON_PEER_CERTIFICATE

transaction_log = logging.getLogger("xds.transaction")
logger = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "ebxml" / "schemas"
WSDL_DIR = SCHEMA_DIR / "wsdl"

#: After refusing an oversized body, read and discard at most this much more.
DRAIN_LIMIT = 256 * 1024 * 1024
_DRAIN_CHUNK = 1024 * 1024

FAULT_CONTENT_TYPE = f'application/soap+xml; charset=UTF-8; action="{ns.WSA_FAULT_ACTION}"'

ErrorBody = Literal["RegistryResponse", "AdhocQueryResponse", "RetrieveDocumentSetResponse"]


@dataclass(frozen=True)
class Operation:
    """One SOAP operation of an actor: what runs for a given request ``wsa:Action``.

    ``handler`` is the actor's edge for one transaction, always the same three steps: parse the
    SOAP body into the transaction's typed request (``xds_core.ebxml.parse``), call the domain
    function with it and plain configuration (no SOAP, no settings inside the domain), and
    serialize the domain's typed result into a :class:`SoapResponse` (or one of the streamed
    kinds in :mod:`xds_core.soap.streaming`).  An :class:`XdsError` from any step becomes the
    operation's ``error_body`` here.
    """

    transaction: str  # "ITI-42"
    handler: Callable[[SoapRequest], SoapResponse]
    response_action: str
    error_body: ErrorBody


@dataclass(frozen=True)
class EndpointSpec:
    """One actor's SOAP endpoint, declared by the actor (its ``soap_operations`` module).

    ``operations`` maps a request ``wsa:Action`` to what runs; an action missing there is
    answered with ``wsa:ActionNotSupported``.  ``internal_error`` is the IHE code of an
    unexpected failure (XDSRegistryError / XDSRepositoryError, ITI TF-3 4.2.4.1).
    """

    name: str
    title: str
    wsdl: str
    operations: Mapping[str, Operation]
    internal_error: ErrorCode


@dataclass(frozen=True)
class Limits:
    """Transport limits, read from settings by the view layer and passed down."""

    max_request_size: int
    max_xml_size: int
    spool_dir: str | None = None
    #: Markup (elements and attributes) of the SOAP root part; see xds_core.safe_xml.markup_count.
    max_xml_nodes: int = DEFAULT_MAX_XML_NODES
    #: Bytes of MTOM parts one request keeps in memory, all parts together.
    memory_budget: int = DEFAULT_MEMORY_BUDGET

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(settings.XDS_MAX_REQUEST_SIZE, settings.XDS_MAX_XML_SIZE,
                   getattr(settings, "FILE_UPLOAD_TEMP_DIR", None) or None,
                   settings.XDS_MAX_XML_NODES, settings.XDS_MTOM_MEMORY_BUDGET)


def error_body(kind: ErrorBody, errors: list[RegistryError]) -> etree._Element:
    """A Failure response body of ``kind`` carrying ``errors``."""
    if kind == "RegistryResponse":
        return registry_response(errors)
    if kind == "AdhocQueryResponse":
        return adhoc_query_response(errors, [])
    if kind == "RetrieveDocumentSetResponse":
        return retrieve_document_set_response(errors, [])[0]
    raise ValueError(f"unknown error body kind {kind!r}")


class _CountingStream:
    """Counts the bytes read from the request stream (for the log and the drain)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data


@dataclass
class _Record:
    """What the one log line of a transaction says."""

    endpoint: str
    started: float
    transaction: str = "-"
    action: str = "-"
    message_id: str = "-"
    status: str = "-"
    errors: int = 0
    warnings: int = 0
    http_status: int = 200
    bytes_in: int = 0
    bytes_out: int = 0

    def emit(self) -> None:
        duration_ms = (time.monotonic() - self.started) * 1000
        transaction_log.info(
            "xds transaction=%s endpoint=%s action=%s message_id=%s status=%s errors=%d warnings=%d http=%d "
            "bytes_in=%d bytes_out=%d duration_ms=%.1f",
            self.transaction, self.endpoint, self.action, self.message_id, self.status, self.errors,
            self.warnings, self.http_status, self.bytes_in, self.bytes_out, duration_ms)


def _summarize(body: etree._Element, record: _Record) -> None:
    """Status and error counts of a response body, for the log line."""
    if etree.QName(body).namespace == ns.HL7V3:  # ITI-44: the acknowledgement typeCode (AA/AE/AR)
        ack = body.find(q(ns.HL7V3, "acknowledgement"))
        record.status = ack.get("typeCode", "-") if ack is not None else "-"
        return
    status_holder = body if body.get("status") else body.find(q(ns.RS, "RegistryResponse"))
    if status_holder is None:
        record.status = "-"
        return
    record.status = (status_holder.get("status") or "-").rsplit(":", 1)[-1]
    error_list = status_holder.find(q(ns.RS, "RegistryErrorList"))
    if error_list is not None:
        for item in error_list.iter(q(ns.RS, "RegistryError")):
            if (item.get("severity") or "").endswith(":Warning"):
                record.warnings += 1
            else:
                record.errors += 1


class _ResponseBody:
    """The response chunks; on close (or exhaustion) removes the request's
    spill files and writes the transaction's log line, exactly once.

    A class rather than a generator: Django closes a streaming response's
    iterator even when it was never started, which would skip a generator's
    ``finally``.
    """

    def __init__(self, chunks: Iterator[BodyChunk], record: _Record, counting: _CountingStream,
                 message: IncomingMessage | None, direct: DirectWriter | None = None,
                 exchange: audit.Exchange | None = None) -> None:
        self._chunks = chunks
        self._record = record
        self._counting = counting
        self._message = message
        self._direct = direct
        self._exchange = exchange
        self._closed = False

    def __iter__(self) -> _ResponseBody:
        return self

    def without_direct_writes(self) -> None:
        """Hand every byte to the caller (for an answer that is collected, not streamed)."""
        self._direct = None

    def __next__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self.close()
            raise
        except BaseException:
            self._record.status += "(aborted)"
            self.close()
            raise
        if isinstance(chunk, bytes):
            self._record.bytes_out += len(chunk)
            return chunk
        # A gathered group: one vectored write to the client's socket where the server
        # allows it (nothing left for the WSGI server to send), else joined once.
        try:
            if self._direct is not None and self._direct.write(chunk):
                self._record.bytes_out += sum(len(piece) for piece in chunk)
                return b""
        except BaseException:
            self._record.status += "(aborted)"
            self.close()
            raise
        data = joined(chunk)
        self._record.bytes_out += len(data)
        return data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            if self._message is not None:
                self._message.close()
            self._record.bytes_in = self._counting.count
            self._record.emit()
            if self._exchange is not None:  # the answer is complete (or aborted): its one audit event
                self._exchange.finish(_audit_outcome(self._record))


@dataclass
class Answer:
    status: int
    content_type: str
    length: int | None
    body: _ResponseBody


class XdsEndpoint:
    """The Django view of one actor's SOAP endpoint (``path("", XdsEndpoint(spec))`` in its ``urls.py``)."""

    csrf_exempt = True  # SOAP clients carry no CSRF token (read by CsrfViewMiddleware)

    def __init__(self, spec: EndpointSpec) -> None:
        self.spec = spec

    # ------------------------------------------------------------------ HTTP

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method == "POST":
            return self.post(request)
        if request.method in ("GET", "HEAD"):
            return self.get(request)
        return HttpResponseNotAllowed(["GET", "HEAD", "POST"])

    def post(self, request: HttpRequest) -> HttpResponseBase:
        meta = request.META
        content_type = meta.get("CONTENT_TYPE", "")
        raw_length = (meta.get("CONTENT_LENGTH") or "").strip()
        content_length: int | None
        if raw_length:
            try:
                content_length = int(raw_length)
                if content_length < 0:
                    raise ValueError
            except ValueError:
                return self._fault_response(SoapFault("Sender", f"invalid Content-Length {raw_length!r}"))
        elif "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
            # gunicorn de-chunks wsgi.input and ends it at the last chunk; Django's
            # own request stream would look empty without a Content-Length.
            content_length = None
        else:
            content_length = 0
        exchange = (audit.soap_exchange(meta.get("REMOTE_ADDR", ""), request.build_absolute_uri(request.path))
                    if audit.enabled() else None)
        if exchange is not None:
            exchange.requestor = _authenticated(exchange.requestor, request)
        return self._http_response(self.handle(content_type, meta["wsgi.input"], content_length,
                                               Limits.from_settings(), direct=meta.get(DIRECT_WRITER_KEY),
                                               exchange=exchange))

    @staticmethod
    def _http_response(answer: Answer) -> HttpResponseBase:
        response: HttpResponseBase
        if answer.content_type.startswith("multipart/"):
            response = StreamingHttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
            if answer.length is not None:
                response["Content-Length"] = str(answer.length)
        else:
            answer.body.without_direct_writes()  # the whole body goes into one HttpResponse
            try:
                content = b"".join(answer.body)
            finally:
                answer.body.close()
            response = HttpResponse(content, status=answer.status, content_type=answer.content_type)
        # Our one structured line per transaction is the log; keep django.request
        # from adding "Bad Request"/"Internal Server Error" lines for SOAP faults.
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response

    def get(self, request: HttpRequest) -> HttpResponseBase:
        keys = {key.lower(): key for key in request.GET}
        base_url = request.build_absolute_uri(request.path)
        if "wsdl" in keys:
            return HttpResponse(_rewritten_schema_file(f"wsdl/{self.spec.wsdl}", base_url),
                                content_type="text/xml; charset=utf-8")
        if "xsd" in keys:
            relative = request.GET[keys["xsd"]]
            if not _is_served_schema(relative):
                return HttpResponseNotFound("no such schema\n", content_type="text/plain; charset=utf-8")
            return HttpResponse(_rewritten_schema_file(relative, base_url), content_type="text/xml; charset=utf-8")
        operations = self.operations()
        lines = [
            f"{self.spec.title} - IHE SOAP 1.2 endpoint ({self.spec.name}).",
            "POST SOAP 1.2 messages (application/soap+xml, or MTOM multipart/related) to this URL.",
            f"WSDL: {base_url}?wsdl",
            "Supported actions:" if operations else "Supported actions: none yet.",
        ]
        lines += [f"  {action}  ({op.transaction})" for action, op in sorted(operations.items())]
        return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; charset=utf-8")

    # ------------------------------------------------------------------ SOAP

    def operations(self) -> Mapping[str, Operation]:
        return self.spec.operations

    def handle(self, content_type: str, stream: BinaryIO, content_length: int | None, limits: Limits, *,
               direct: DirectWriter | None = None, exchange: audit.Exchange | None = None) -> Answer:
        """Process one request body; never raises (every problem becomes an answer).

        ``direct``: the server's vectored writer for gathered answer groups, if it offers one.
        ``exchange``: the audit record of this request (who sent it where), when audited; it is
        recorded once the answer is complete.
        """
        record = _Record(self.spec.name, time.monotonic())
        counting = _CountingStream(stream)
        message: IncomingMessage | None = None
        request: SoapRequest | None = None
        try:
            message = read_message(content_type, counting, content_length=content_length,
                                   max_size=limits.max_request_size, max_xml_size=limits.max_xml_size,
                                   spool_dir=limits.spool_dir, max_xml_nodes=limits.max_xml_nodes,
                                   memory_budget=limits.memory_budget)
            request = parse_envelope(message)
            record.action = request.action
            record.message_id = request.message_id or "-"
            operation = self.operations().get(request.action)
            if operation is None:
                raise _action_not_supported(request.action, self.spec)
            record.transaction = operation.transaction
            if exchange is not None:
                exchange.transaction = audit.Transaction.of(operation.transaction)
            with audit.active(exchange):
                response = self._invoke(operation, request)
            if response.relates_to is None:
                response.relates_to = request.message_id
            _summarize(response.body, record)
            response_type, length, chunks = response.render()
            return Answer(200, response_type, length,
                          _ResponseBody(chunks, record, counting, message, direct, exchange))
        except MtomError as exc:
            if isinstance(exc, MessageTooLarge):
                _drain(counting, content_length)
            return self._fault_answer(SoapFault("Sender", str(exc), http_status=exc.http_status), record, counting,
                                      message, request, exchange)
        except SoapFault as fault:
            return self._fault_answer(fault, record, counting, message, request, exchange)
        except Exception:
            logger.exception("unexpected error in the %s endpoint (action %s)", self.spec.name, record.action)
            fault = SoapFault("Receiver", "internal error while processing the message; see the server log")
            return self._fault_answer(fault, record, counting, message, request, exchange)

    def _invoke(self, operation: Operation, request: SoapRequest) -> SoapResponse:
        try:
            return operation.handler(request)
        except XdsError as exc:
            return SoapResponse(operation.response_action, error_body(operation.error_body, exc.errors))
        except SoapFault:
            raise
        except Exception:
            logger.exception("%s failed (action %s, message %s)", operation.transaction, request.action,
                             request.message_id)
            audit.worsen(audit.EventOutcome.MAJOR_FAILURE)  # our failure, not the requestor's
            error = RegistryError(self.spec.internal_error,
                                  f"internal error while processing {operation.transaction}; see the server log")
            return SoapResponse(operation.response_action, error_body(operation.error_body, [error]))

    def _fault_answer(self, fault: SoapFault, record: _Record, counting: _CountingStream,
                      message: IncomingMessage | None, request: SoapRequest | None,
                      exchange: audit.Exchange | None = None) -> Answer:
        record.status = f"Fault:{fault.code}" + (f"/{fault.subcode}" if fault.subcode else "")
        record.http_status = fault.http_status
        content = render_fault(fault, relates_to=request.message_id if request is not None else None)
        return Answer(fault.http_status, FAULT_CONTENT_TYPE, len(content),
                      _ResponseBody(iter((content,)), record, counting, message, exchange=exchange))

    def _fault_response(self, fault: SoapFault) -> HttpResponseBase:
        record = _Record(self.spec.name, time.monotonic())
        return self._http_response(self._fault_answer(fault, record, _CountingStream(io.BytesIO()), None, None))

    def dispatch_local(self, content_type: str, body: bytes) -> tuple[int, str, Iterator[bytes]]:
        """Run one SOAP exchange with this endpoint, without HTTP.

        Same bytes, same checks, same log line as over HTTP; registered by the actor's
        AppConfig for :class:`~xds_core.soap.client.SoapClient`'s ``local:<name>`` URLs.
        Returns ``(HTTP status, Content-Type, body chunks)``; exhaust or close the
        chunks (they own the request's spill files).
        """
        # In process: the requestor is this process, the endpoint its local: address.
        exchange = audit.soap_exchange("", f"local:{self.spec.name}") if audit.enabled() else None
        answer = self.handle(content_type, io.BytesIO(body), len(body), Limits.from_settings(), exchange=exchange)
        return answer.status, answer.content_type, answer.body


def _authenticated(requestor: audit.Participant, request: HttpRequest) -> audit.Participant:
    """The requestor as TLS authenticated it (issue 13): UserName = its node identity (``request.xds_identity``,
    set by the identity middleware), AlternativeUserID = its certificate's subject (PS3.15 A.5.2: an
    alternative identification of the same participant).  Plain HTTP: the requestor as it was."""
    certificate = request.META.get(ENVIRON_PEER_CERTIFICATE)
    identity = getattr(request, "xds_identity", None)
    if not isinstance(certificate, PeerCertificate) and not isinstance(identity, Identity):
        return requestor
    return replace(requestor,
                   user_name=identity.name if isinstance(identity, Identity) else requestor.user_name,
                   alternative_user_id=(certificate.subject if isinstance(certificate, PeerCertificate)
                                        else requestor.alternative_user_id))


def _audit_outcome(record: _Record) -> audit.EventOutcome | None:
    """How the answer ended, as the endpoint saw it (audit.EventOutcome's mapping): a Receiver fault is
    ours (12), any other fault the requestor's (8); an answer cut short is at least a serious failure;
    a streamed answer whose status only the operation knows gives None."""
    status = record.status
    if status.startswith("Fault:"):
        return (audit.EventOutcome.MAJOR_FAILURE if status.startswith("Fault:Receiver")
                else audit.EventOutcome.SERIOUS_FAILURE)
    outcome = audit.outcome_of_status(status.removesuffix("(aborted)"))
    if status.endswith("(aborted)"):
        return audit.worst(outcome, audit.EventOutcome.SERIOUS_FAILURE)
    return outcome


def _action_not_supported(action: str, spec: EndpointSpec) -> SoapFault:
    # WS-Addressing 1.0 SOAP Binding §6.4.4: detail is wsa:ProblemAction/wsa:Action.
    detail = etree.Element(q(ns.WSA, "ProblemAction"), nsmap={"wsa": ns.WSA})
    etree.SubElement(detail, q(ns.WSA, "Action")).text = action
    return SoapFault("Sender", f"the action {action!r} is not supported by the {spec.title} endpoint",
                     subcode="wsa:ActionNotSupported", detail=detail)


def _drain(counting: _CountingStream, content_length: int | None) -> None:
    """Read (and discard) the rest of a refused body, up to :data:`DRAIN_LIMIT`."""
    if content_length is not None:
        remaining = content_length - counting.count
        if remaining > DRAIN_LIMIT:
            return  # not worth it: the client will see the connection close
        while remaining > 0:
            data = counting.read(min(_DRAIN_CHUNK, remaining))
            if not data:
                return
            remaining -= len(data)
        return
    budget = DRAIN_LIMIT
    while budget > 0 and (data := counting.read(min(_DRAIN_CHUNK, budget))):
        budget -= len(data)


# ---------------------------------------------------------------------- WSDL / XSD


def _is_served_schema(relative: str) -> bool:
    """True for an existing ``.xsd`` inside the schema folder (no path traversal)."""
    if not relative or "\\" in relative or "\x00" in relative or relative.startswith("/"):
        return False
    root = SCHEMA_DIR.resolve()
    target = (root / relative).resolve()
    return target.is_relative_to(root) and target.suffix == ".xsd" and target.is_file()


@lru_cache(maxsize=256)
def _rewritten_schema_file(relative: str, base_url: str) -> bytes:
    """A WSDL/XSD from the schema folder, with references pointing back at us.

    ``soap12:address/@location`` becomes ``base_url``; every relative
    ``schemaLocation`` / ``wsdl:import/@location`` becomes ``base_url?xsd=<path>``.
    """
    root = SCHEMA_DIR.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"{relative!r} is outside the schema folder")
    document = parse_xml(path.read_bytes())
    for element in document.iter(q(ns.XSD, "include"), q(ns.XSD, "import"), q(ns.XSD, "redefine"),
                                 q(ns.WSDL, "import")):
        attribute = "location" if element.tag == q(ns.WSDL, "import") else "schemaLocation"
        location = element.get(attribute)
        if not location or urlsplit(location).scheme:
            continue
        target = (path.parent / location).resolve()
        if target.is_relative_to(root):
            element.set(attribute, f"{base_url}?xsd={quote(target.relative_to(root).as_posix(), safe='/')}")
    for address in document.iter(q(ns.WSDL_SOAP12, "address")):
        address.set("location", base_url)
    _expand_substitution_groups(document)
    return to_bytes(document)


def _expand_substitution_groups(document: etree._Element) -> None:
    """Spell out each reference to a substitution-group head as an explicit ``xsd:choice``.

    XML Schema 1.0 Part 1 §2.2.2.2 / §3.3.6: wherever ``<element ref="H"/>`` appears, any
    element declared with ``substitutionGroup="H"`` (transitively) may appear instead.  Some
    SOAP stacks do not implement substitution groups (zeep 4.3.3, python-zeep issue #321):
    they reject ebRIM's ``rim:RegistryObjectList`` (``ref="rim:Identifiable"``) holding an
    ``rim:ExtrinsicObject`` with "Unexpected element", so an ITI-18 answer could not be read.
    The choice of the head (unless abstract) and its members, with the reference's occurrence
    bounds, accepts exactly the same children; the members' ``substitutionGroup`` attributes are
    then dropped, or the head's particle would still admit them and the choice would break the
    Unique Particle Attribution constraint (§3.8.6).  Only heads and members declared in the same
    schema document are expanded (ebRIM declares all of its own, and no other served schema
    refers to them); the files on disk stay the published ones, only what is served over
    ``?xsd=`` is rewritten.
    """
    if document.tag != q(ns.XSD, "schema"):
        return
    target = document.get("targetNamespace")
    declared = {element.get("name"): element for element in document.iterchildren(q(ns.XSD, "element"))}
    members: dict[str, list[str]] = {}
    for name, element in declared.items():
        head = element.get("substitutionGroup")
        if not head or not name:
            continue
        prefix, _, local_name = head.rpartition(":")
        if element.nsmap.get(prefix or None) == target and local_name in declared:
            members.setdefault(local_name, []).append(name)

    def closure(head: str, seen: set[str]) -> list[str]:
        out: list[str] = []
        for member in members.get(head, []):
            if member not in seen:
                seen.add(member)
                out += [member, *closure(member, seen)]
        return out

    for reference in list(document.iter(q(ns.XSD, "element"))):
        ref = reference.get("ref")
        if not ref:
            continue
        prefix, _, head = ref.rpartition(":")
        if reference.nsmap.get(prefix or None) != target or head not in members:
            continue
        names = ([] if declared[head].get("abstract") in ("true", "1") else [head]) + closure(head, {head})
        choice = etree.Element(q(ns.XSD, "choice"))
        for bound in ("minOccurs", "maxOccurs"):
            if reference.get(bound) is not None:
                choice.set(bound, reference.get(bound))
        for name in names:
            etree.SubElement(choice, q(ns.XSD, "element"), ref=f"{prefix}:{name}" if prefix else name)
        choice.tail = reference.tail
        reference.getparent().replace(reference, choice)
    for head in members:
        for name in members[head]:
            declared[name].attrib.pop("substitutionGroup", None)
