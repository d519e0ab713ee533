"""The repository's side of its two conversations with a Document Registry.

Both go through the IHE transactions (never the registry's models), as real
SOAP bytes: over HTTP to any vendor's registry, or to this server's own
registry endpoint in process (``local:registry``) when ``XDS_REGISTRY_URL`` is
empty.

- ITI-42 Register Document Set-b, sent after the documents are stored
  (ITI TF-2 3.41.4.1.3);
- ITI-18 Registry Stored Query GetDocuments, used by reconcile to learn
  whether a pending document did reach the registry.
"""

from __future__ import annotations

import requests
import urllib3.exceptions
from lxml import etree

from xds_core import audit
from xds_core.ebxml import parse as ebxml_parse
from xds_core.ebxml import serialize as ebxml_serialize
from xds_core.ebxml.responses import parse_registry_response
from xds_core.errors import RegistryError
from xds_core.metadata.objects import DocumentEntry, Submission
from xds_core.safe_xml import to_bytes
from xds_core.soap.client import SoapClient, TransportError
from xds_core.vocabulary import Action, ReturnType, StoredQuery

#: The in-process address of this server's Document Registry endpoint.
LOCAL_REGISTRY = "local:registry"
#: uniqueIds per GetDocuments query (keeps each request small).
QUERY_BATCH = 100


class RegistryUnavailable(Exception):
    """The registry could not be reached or gave no usable answer (-> XDSRegistryNotAvailable).

    As such it says nothing about whether the registry *acted* on the request: a timeout, a reset
    after the request went out or an answer that is not a RegistryResponse may follow a registration
    the registry committed.  Only :class:`RegistryNotReached` is certain that it did not.
    """


class RegistryNotReached(RegistryUnavailable):
    """No connection to the registry was ever made (refused, unknown host, connect timeout): not one
    byte of the request left, so the registry certainly did not act on it."""


def _never_connected(exc: BaseException | None) -> bool:
    """True when ``exc`` (the cause of a TransportError) failed while *connecting*, before sending.

    requests raises ConnectTimeout for a connect that timed out, and ConnectionError wrapping
    urllib3's MaxRetryError(reason=NewConnectionError) for a refused connection or a name that does
    not resolve (urllib3 2: NameResolutionError is a NewConnectionError).  A ConnectionError of any
    other reason (ProtocolError: reset, remote closed) may come after the body was sent: not certain.
    """
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.exceptions.SSLError):
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, urllib3.exceptions.MaxRetryError):
            reason = reason.reason
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False


class RegistryClient:
    def __init__(self, url: str, *, timeout: float = 120.0) -> None:
        self.url = url or LOCAL_REGISTRY
        self.timeout = timeout

    def _call(self, action: Action, body: etree._Element) -> etree._Element:
        try:
            result = SoapClient(self.url, timeout=self.timeout).call(action, body)
        except TransportError as exc:
            if _never_connected(exc.__cause__):
                raise RegistryNotReached(f"registry at {self.url} not reachable: {exc}") from exc
            raise RegistryUnavailable(f"registry at {self.url} not reachable: {exc}") from exc
        if result.fault is not None:
            raise RegistryUnavailable(
                f"registry at {self.url} answered {action} with a SOAP Fault: {result.fault.reason}")
        if result.body is None:
            raise RegistryUnavailable(f"registry at {self.url} answered {action} with no SOAP body")
        return result.body

    def register(self, submission: Submission) -> tuple[str, list[RegistryError]]:
        """ITI-42: returns (RegistryResponse/@status, its RegistryErrors)."""
        outcome = audit.EventOutcome.SERIOUS_FAILURE
        try:
            body = self._call(Action.RegisterDocumentSet, ebxml_serialize.submit_objects_request(submission))
            try:
                status, errors = parse_registry_response(body)
            except Exception as exc:  # not a RegistryResponse: nothing we can relay
                raise RegistryUnavailable(f"registry at {self.url} sent no RegistryResponse: {exc}") from exc
            outcome = audit.outcome_of_status(status, audit.EventOutcome.SERIOUS_FAILURE)
            return status, errors
        except RegistryUnavailable as exc:
            outcome = _unavailable_outcome(exc)
            raise
        finally:  # ITI TF-2b 3.42.5.1.1: the repository's side of ITI-42 (Export of the patient's submission)
            audit.record_sent(audit.Transaction.ITI_42, self.url, outcome, audit.submission_objects, submission)

    def get_documents(self, unique_ids: list[str]) -> list[DocumentEntry]:
        """ITI-18 GetDocuments by $XDSDocumentEntryUniqueId (ITI TF-2 3.18.4.1.2.3.7.5)."""
        found: list[DocumentEntry] = []
        for start in range(0, len(unique_ids), QUERY_BATCH):
            batch = unique_ids[start:start + QUERY_BATCH]
            value = "(" + ",".join("'" + uid.replace("'", "''") + "'" for uid in batch) + ")"
            request = ebxml_serialize.adhoc_query_request(
                StoredQuery.GetDocuments, [("$XDSDocumentEntryUniqueId", [value])],
                return_type=ReturnType.LeafClass)
            outcome = audit.EventOutcome.SERIOUS_FAILURE
            try:
                body = self._call(Action.RegistryStoredQuery, request)
                try:
                    result = ebxml_parse.parse_adhoc_query_response(body)
                except Exception as exc:
                    raise RegistryUnavailable(f"registry at {self.url} sent no AdhocQueryResponse: {exc}") from exc
                if any(e.is_error for e in result.errors):
                    raise RegistryUnavailable("registry refused GetDocuments: " + "; ".join(
                        f"{e.error_code}: {e.code_context}" for e in result.errors))
                outcome = audit.outcome_of_status(result.status, audit.EventOutcome.SUCCESS)
            except RegistryUnavailable as exc:
                outcome = _unavailable_outcome(exc)
                raise
            finally:  # ITI TF-2a 3.18.5.1.1: the querying side of ITI-18
                audit.record_sent(audit.Transaction.ITI_18, self.url, outcome, _audited_query, request)
            found += [o for o in result.objects if isinstance(o, DocumentEntry)]
        return found


def _unavailable_outcome(exc: RegistryUnavailable) -> audit.EventOutcome:
    """Not reached at all: the action was unavailable (12); an answer we cannot use: a failure (8)."""
    return (audit.EventOutcome.MAJOR_FAILURE if isinstance(exc.__cause__, TransportError)
            else audit.EventOutcome.SERIOUS_FAILURE)


def _audited_query(request: etree._Element) -> list[audit.ParticipantObject]:
    """The GetDocuments query as sent (by uniqueId: it names no patient)."""
    query_bytes = to_bytes(request, xml_declaration=False)
    return [audit.query(audit.Transaction.ITI_18, StoredQuery.GetDocuments.value, query_bytes)]
