"""Run a Registry Stored Query (ITI-18) or Multi-Patient Stored Query (ITI-51).

Flow: AdhocQueryRequest -> transaction/query pairing -> returnType -> parameters (all findings)
-> one SQL statement (+ associations) -> single-patient rule -> LeafClass/ObjectRef elements.

Deployment values (result limit, homeCommunityId) arrive in a :class:`QueryConfig` built by the
SOAP handler; nothing here reads Django settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lxml import etree

from xds_core.ebxml.messages import AdhocQueryRequest
from xds_core.errors import ErrorCode, XdsError
from xds_core.safe_xml import parse_xml
from xds_core.vocabulary import MULTI_PATIENT_QUERIES, ReturnType, StoredQuery
from xds_registry.stored_query.parameters import parse_parameters, spec_for
from xds_registry.stored_query.queries import QUERIES, Fetch, QueryResult, Row


class Transaction(StrEnum):
    RegistryStoredQuery = "ITI-18"
    MultiPatientStoredQuery = "ITI-51"


@dataclass(frozen=True, slots=True)
class QueryConfig:
    max_results: int                    # XDS_MAX_QUERY_RESULTS: above it XDSTooManyResults
    home_community_id: str | None       # XDS_HOME_COMMUNITY_ID: @home on every returned object


@dataclass(frozen=True)
class StoredQueryOutcome:
    """What the response carries, plus what the transaction log line wants."""

    query: StoredQuery
    return_type: ReturnType
    objects: list[etree._Element]
    result: QueryResult


def check_transaction(query_id: str, transaction: Transaction) -> StoredQuery:
    """The query id is known and allowed on this transaction.

    ITI-51 carries only the multi-patient queries and ITI-18 must not accept them (ITI TF-2b
    3.51.4.1.2; IPF ``AdhocQueryRequestValidator`` allowed query types).  A query id that the
    transaction does not define is answered like an unknown one: XDSUnknownStoredQuery
    (IPF ``ValidationMessage.UNKNOWN_QUERY_TYPE`` maps to that code).
    """
    query = spec_for(query_id).query
    if (query in MULTI_PATIENT_QUERIES) != (transaction is Transaction.MultiPatientStoredQuery):
        raise XdsError.of(ErrorCode.XDSUnknownStoredQuery,
                          f"Stored query {query_id} ({query.name}) is not available on {transaction.value}")
    return query


def check_return_type(value: str) -> ReturnType:
    """``ResponseOption@returnType`` must be LeafClass or ObjectRef (ITI TF-2a 3.18.4.1.2.1)."""
    try:
        return ReturnType(value)
    except ValueError:
        raise XdsError.of(ErrorCode.XDSRegistryError,
                          f"returnType {value!r} is not supported (LeafClass or ObjectRef)") from None


def run_stored_query(request: AdhocQueryRequest, config: QueryConfig,
                     transaction: Transaction = Transaction.RegistryStoredQuery) -> StoredQueryOutcome:
    """Execute one stored query; raises XdsError (rendered as a Failure AdhocQueryResponse).

    An unknown patient is not an error: the answer is an empty Success (ITI TF-3
    Table 4.2.4.1-2 lists XDSUnknownPatientId for ITI-41/42, not for ITI-18; ITI TF-2a 3.18.4.1.3).
    """
    query = check_transaction(request.query_id, transaction)
    return_type = check_return_type(request.return_type)
    params = parse_parameters(request.query_id, request.parameters)
    leaf = return_type is ReturnType.LeafClass
    result = QUERIES[query](params, Fetch(limit=config.max_results, leaf_class=leaf))
    if leaf and transaction is Transaction.RegistryStoredQuery:
        check_single_patient(result.rows)
    objects = leaf_class_elements(result.rows, config.home_community_id) if leaf \
        else object_ref_elements(result.rows, config.home_community_id)
    return StoredQueryOutcome(query, return_type, objects, result)


def check_single_patient(rows: list[Row]) -> None:
    """A LeafClass answer of ITI-18 must concern one patient (XDSResultNotSinglePatient, ITI TF-2a 3.18.4.1.3).

    ObjectRef answers carry no patient data and are allowed to span patients (NIST 12368:
    the LeafClass variant fails, the ObjectRef variant succeeds).
    """
    patients = sorted({r.patient_id for r in rows if r.patient_id})
    if len(patients) > 1:
        raise XdsError.of(ErrorCode.XDSResultNotSinglePatient,
                          f"The result spans {len(patients)} patients: {', '.join(patients[:5])}")


def leaf_class_elements(rows: list[Row], home: str | None) -> list[etree._Element]:
    """The stored canonical fragments, parsed in ONE pass, with @home added (no per-object queries)."""
    if not rows:
        return []
    # Our own fragments, written by the registry; one parse of their concatenation is far cheaper
    # than one parse per object.
    data = "<fragments>" + "".join(r.xml or "" for r in rows) + "</fragments>"
    container = parse_xml(data.encode("utf-8"))
    elements = list(container)
    if len(elements) != len(rows):
        raise XdsError.of(ErrorCode.XDSRegistryError, "Stored metadata of a result object is unreadable")
    for element in elements:
        container.remove(element)
        if home:
            element.set("home", home)
    return elements


def object_ref_elements(rows: list[Row], home: str | None) -> list[etree._Element]:
    from xds_core.ebxml.serialize import object_ref

    return [object_ref(r.entry_uuid, home) for r in rows]
