"""Sending the IHE messages of a step and reading the answers (conformance README §2 step 10).

The runner talks to the systems under test only through these SOAP 1.2 /
WS-Addressing exchanges (MTOM/XOP for Provide and Register), so it can judge
any vendor's endpoints.  Whatever comes back - a connection refused, an HTML
error page, garbage, a SOAP Fault - becomes an :class:`Exchange` or a
:class:`TransportFailure` with a reason, never an exception escaping the run.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from conformance.expectations import RetrievedDocument
from conformance.xmlutil import children, first, local, text_of
from xds_core import ns
from xds_core.vocabulary import Action

#: transaction -> (wsa:Action, endpoint name)
ACTIONS: dict[str, tuple[str, str]] = {
    "ITI-42": (Action.RegisterDocumentSet.value, "registry"),
    "ITI-18": (Action.RegistryStoredQuery.value, "registry"),
    "ITI-51": (Action.MultiPatientStoredQuery.value, "registry"),
    "ITI-41": (Action.ProvideAndRegisterDocumentSet.value, "repository"),
    "RAD-68": (Action.ProvideAndRegisterDocumentSet.value, "repository"),
    "ITI-43": (Action.RetrieveDocumentSet.value, "repository"),
    "RAD-69": (Action.RetrieveImagingDocumentSet.value, "imaging-source"),
}


class TransportFailure(RuntimeError):
    """No usable SOAP answer (refused, timeout, not SOAP, undecodable MTOM)."""


@dataclass
class Exchange:
    """What came back for one request."""

    http_status: int
    action: str | None
    body: etree._Element | None
    fault: str | None = None
    documents: list[RetrievedDocument] = field(default_factory=list)


@dataclass
class Attachment:
    """A document sent as an MTOM part."""

    content_id: str
    content_type: str
    path: Path


class Transport:
    """SOAP client per endpoint (``xds_core.soap.client.SoapClient``)."""

    def __init__(self, endpoints: dict[str, str], *, timeout: float = 120.0) -> None:
        self.endpoints = endpoints
        self.timeout = timeout
        self._clients: dict[str, object] = {}

    def _client(self, endpoint: str):  # -> SoapClient
        if endpoint not in self._clients:
            from xds_core.soap.client import SoapClient

            self._clients[endpoint] = SoapClient(self.endpoints[endpoint], timeout=self.timeout)
        return self._clients[endpoint]

    def send(self, transaction: str, body: etree._Element, attachments: list[Attachment] | None = None) -> Exchange:
        action, endpoint = ACTIONS[transaction]
        if not self.endpoints.get(endpoint):
            raise TransportFailure(f"no {endpoint} endpoint configured")
        try:
            from xds_core.soap.client import TransportError
            from xds_core.soap.mtom import OutgoingPart
        except ImportError as exc:
            raise TransportFailure(f"SOAP client unavailable: {exc}") from exc
        parts = [OutgoingPart(content_id=a.content_id, content_type=a.content_type, source=a.path,
                              size=a.path.stat().st_size) for a in attachments or []]
        try:
            result = self._client(endpoint).call(action, body, parts=parts or None, mtom=True if parts else None)
        except TransportError as exc:
            raise TransportFailure(_short(str(exc) or type(exc).__name__, self.endpoints[endpoint])) from exc
        except Exception as exc:  # a vendor's answer must never crash the run
            raise TransportFailure(f"{type(exc).__name__}: {exc}") from exc
        fault = None
        if result.fault is not None:
            f = result.fault
            fault = f"{getattr(f, 'code', '?')}" + (f"/{f.subcode}" if getattr(f, "subcode", None) else "") + \
                f": {getattr(f, 'reason', '')}"
        exchange = Exchange(http_status=result.http_status, action=result.action, body=result.body, fault=fault)
        try:
            if fault is None and result.body is not None and local(result.body) == "RetrieveDocumentSetResponse":
                exchange.documents = _documents(result)
        finally:
            result.close()  # spilled attachments: their bytes are in exchange.documents now
        return exchange


def _short(message: str, url: str) -> str:
    """requests' connection errors are paragraphs; keep what a reader needs."""
    for marker, text in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                         ("Name or service not known", "unknown host"), ("Connection reset", "connection reset"),
                         ("RemoteDisconnected", "connection closed without an answer")):
        if marker in message:
            return f"{text}: {url}"
    return message


def _documents(result) -> list[RetrievedDocument]:
    """DocumentResponse elements of an ITI-43/RAD-69 answer with their bytes (xop:Include or inline base64)."""
    out: list[RetrievedDocument] = []
    for response in children(result.body, "DocumentResponse"):
        doc = RetrievedDocument(
            repository_unique_id=text_of(first(response, "RepositoryUniqueId")),
            document_unique_id=text_of(first(response, "DocumentUniqueId")),
            mime_type=text_of(first(response, "mimeType")), content=None)
        element = next((c for c in children(response, "Document")), None)
        if element is None:
            doc.problem = "DocumentResponse without Document"
        else:
            try:
                attachment = result.binary(element)
                doc.content = attachment.read_bytes()
            except Exception as exc:  # unresolvable cid, bad base64: report, don't crash
                try:
                    doc.content = base64.b64decode(text_of(element), validate=True)
                except (ValueError, TypeError):
                    doc.problem = f"document content unreadable: {exc}"
        out.append(doc)
    return out


def query_request(query_id: str, parameters: list[tuple[str, list[str]]], return_type: str = "LeafClass"
                  ) -> etree._Element:
    """An ``query:AdhocQueryRequest`` built by the runner itself (IDS output checks)."""
    request = etree.Element(ns.q(ns.QUERY, "AdhocQueryRequest"), nsmap={"query": ns.QUERY, "rim": ns.RIM})
    etree.SubElement(request, ns.q(ns.QUERY, "ResponseOption"), returnComposedObjects="true",
                     returnType=return_type)
    query = etree.SubElement(request, ns.q(ns.RIM, "AdhocQuery"), id=query_id)
    for name, values in parameters:
        slot = etree.SubElement(query, ns.q(ns.RIM, "Slot"), name=name)
        value_list = etree.SubElement(slot, ns.q(ns.RIM, "ValueList"))
        for value in values:
            etree.SubElement(value_list, ns.q(ns.RIM, "Value")).text = value
    return request


def retrieve_request(documents: list[tuple[str, str]]) -> etree._Element:
    """``xdsb:RetrieveDocumentSetRequest`` for (repositoryUniqueId, documentUniqueId) pairs."""
    request = etree.Element(ns.q(ns.XDSB, "RetrieveDocumentSetRequest"), nsmap={"xdsb": ns.XDSB})
    for repository_uid, document_uid in documents:
        dr = etree.SubElement(request, ns.q(ns.XDSB, "DocumentRequest"))
        etree.SubElement(dr, ns.q(ns.XDSB, "RepositoryUniqueId")).text = repository_uid
        etree.SubElement(dr, ns.q(ns.XDSB, "DocumentUniqueId")).text = document_uid
    return request
