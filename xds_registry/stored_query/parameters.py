"""Stored-query parameters: the ``$XDS...`` slot grammar and each query's parameter table.

Pure code (no Django, no lxml).  Input is what
:func:`xds_core.ebxml.parse.parse_adhoc_query_request` yields: one
``(slot name, raw rim:Value texts)`` tuple per ``rim:Slot`` in document order.

Value grammar (ITI TF-2a 3.18.4.1.2.3.5 "Coding of Parameter Values"):

* strings are single-quoted, a quote inside is doubled (SQL style): ``'ID^^^&1.2.3&ISO'``;
* several values are a parenthesised, comma-separated list: ``('a', 'b')``;
* a list may also be split across several ``rim:Value`` elements of one Slot;
* numbers and times (DTM) are unquoted: ``20041224``;
* coded values are ``'code^^scheme'`` (both parts required: NIST SQ-04 expects a Failure
  for ``'a^^'`` and for a bare ``'Dialysis'``).

Only ``$XDSDocumentEntryEventCodeList``, ``$XDSDocumentEntryConfidentialityCode``,
``$XDSFolderCodeList`` and ``$XDSDocumentEntryReferenceIdList`` may be repeated as separate
Slots; values inside one Slot are OR'd, the Slots are AND'ed (ITI TF-2a 3.18.4.1.2.3.5;
IPF ``QueryParameterValidation`` ``allowingMultipleSlots``).  Repeating any other Slot, or giving
a single-valued parameter several values, is ``XDSStoredQueryParamNumber``; a missing required
parameter is ``XDSStoredQueryMissingParam``; an unknown query id ``XDSUnknownStoredQuery``; a
malformed value ``XDSRegistryError``.  Unknown parameters are ignored (NIST SQ-05).  All findings
are collected and raised together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from xds_core.errors import ErrorCode, RegistryError, XdsError
from xds_core.metadata.values import Code
from xds_core.vocabulary import QueryParameter, StoredQuery


class Kind(Enum):
    """What one parameter value is, and so how it is checked and converted."""

    STRING = "string"          # quoted string, kept as is (ids, uuids, status URIs, association types)
    CODE = "code"              # quoted 'code^^scheme' -> Code
    DTM = "dtm"                # unquoted HL7 DTM -> 14-digit UTC string (earliest instant it covers)
    LIKE = "like"              # quoted SQL LIKE pattern (% and _ wildcards), author person
    INTEGER = "integer"        # unquoted integer ($MetadataLevel)


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a stored query.

    ``multiple``: accepts several values (OR).  ``and_or``: the Slot may be repeated (AND of ORs).
    """

    name: str
    kind: Kind
    multiple: bool = False
    and_or: bool = False


@dataclass(frozen=True)
class QuerySpec:
    """The declarative parameter specification of one stored query (ITI TF-2a 3.18.4.1.2.3.7)."""

    query: StoredQuery
    params: dict[str, Param]
    required: tuple[str, ...] = ()
    #: Groups of which exactly one parameter must be present.
    exactly_one_of: tuple[tuple[str, ...], ...] = ()
    #: Groups of which at least one parameter must be present (ITI-51).
    at_least_one_of: tuple[tuple[str, ...], ...] = ()


# --- parameter names (ITI TF-2a 3.18.4.1.2.3.7): declared once, in xds_core.vocabulary.QueryParameter -----

DE_PATIENT_ID = QueryParameter.DE_PATIENT_ID
DE_CLASS_CODE = QueryParameter.DE_CLASS_CODE
DE_TYPE_CODE = QueryParameter.DE_TYPE_CODE
DE_PRACTICE_SETTING_CODE = QueryParameter.DE_PRACTICE_SETTING_CODE
DE_CREATION_FROM = QueryParameter.DE_CREATION_FROM
DE_CREATION_TO = QueryParameter.DE_CREATION_TO
DE_SERVICE_START_FROM = QueryParameter.DE_SERVICE_START_FROM
DE_SERVICE_START_TO = QueryParameter.DE_SERVICE_START_TO
DE_SERVICE_STOP_FROM = QueryParameter.DE_SERVICE_STOP_FROM
DE_SERVICE_STOP_TO = QueryParameter.DE_SERVICE_STOP_TO
DE_HCFT_CODE = QueryParameter.DE_HCFT_CODE
DE_EVENT_CODE_LIST = QueryParameter.DE_EVENT_CODE_LIST
DE_CONFIDENTIALITY_CODE = QueryParameter.DE_CONFIDENTIALITY_CODE
DE_AUTHOR_PERSON = QueryParameter.DE_AUTHOR_PERSON
DE_FORMAT_CODE = QueryParameter.DE_FORMAT_CODE
DE_STATUS = QueryParameter.DE_STATUS
DE_TYPE = QueryParameter.DE_TYPE
DE_DOCUMENT_AVAILABILITY = QueryParameter.DE_DOCUMENT_AVAILABILITY
DE_REFERENCE_ID_LIST = QueryParameter.DE_REFERENCE_ID_LIST
DE_ENTRY_UUID = QueryParameter.DE_ENTRY_UUID
DE_UNIQUE_ID = QueryParameter.DE_UNIQUE_ID
DE_LOGICAL_ID = QueryParameter.DE_LOGICAL_ID
SS_PATIENT_ID = QueryParameter.SS_PATIENT_ID
SS_SOURCE_ID = QueryParameter.SS_SOURCE_ID
SS_SUBMISSION_TIME_FROM = QueryParameter.SS_SUBMISSION_TIME_FROM
SS_SUBMISSION_TIME_TO = QueryParameter.SS_SUBMISSION_TIME_TO
SS_AUTHOR_PERSON = QueryParameter.SS_AUTHOR_PERSON
SS_CONTENT_TYPE = QueryParameter.SS_CONTENT_TYPE
SS_STATUS = QueryParameter.SS_STATUS
SS_ENTRY_UUID = QueryParameter.SS_ENTRY_UUID
SS_UNIQUE_ID = QueryParameter.SS_UNIQUE_ID
FOLDER_PATIENT_ID = QueryParameter.FOLDER_PATIENT_ID
FOLDER_LAST_UPDATE_FROM = QueryParameter.FOLDER_LAST_UPDATE_FROM
FOLDER_LAST_UPDATE_TO = QueryParameter.FOLDER_LAST_UPDATE_TO
FOLDER_CODE_LIST = QueryParameter.FOLDER_CODE_LIST
FOLDER_STATUS = QueryParameter.FOLDER_STATUS
FOLDER_ENTRY_UUID = QueryParameter.FOLDER_ENTRY_UUID
FOLDER_UNIQUE_ID = QueryParameter.FOLDER_UNIQUE_ID
FOLDER_LOGICAL_ID = QueryParameter.FOLDER_LOGICAL_ID
PATIENT_ID = QueryParameter.PATIENT_ID
UUID = QueryParameter.UUID
ASSOCIATION_TYPES = QueryParameter.ASSOCIATION_TYPES
ASSOCIATION_STATUS = QueryParameter.ASSOCIATION_STATUS
HOME_COMMUNITY_ID = QueryParameter.HOME_COMMUNITY_ID
METADATA_LEVEL = QueryParameter.METADATA_LEVEL


def _p(name: str, kind: Kind, *, multiple: bool = False, and_or: bool = False) -> Param:
    return Param(name, kind, multiple, and_or)


def _table(*params: Param) -> dict[str, Param]:
    return {p.name: p for p in params}


_S, _C, _T, _L, _I = Kind.STRING, Kind.CODE, Kind.DTM, Kind.LIKE, Kind.INTEGER

_COMMON = (_p(HOME_COMMUNITY_ID, _S), _p(METADATA_LEVEL, _I))

#: FindDocuments (ITI TF-2a 3.18.4.1.2.3.7.1), without the patient id.
_FIND_DOCUMENTS_FILTERS = (
    _p(DE_CLASS_CODE, _C, multiple=True),
    _p(DE_TYPE_CODE, _C, multiple=True),
    _p(DE_PRACTICE_SETTING_CODE, _C, multiple=True),
    _p(DE_CREATION_FROM, _T), _p(DE_CREATION_TO, _T),
    _p(DE_SERVICE_START_FROM, _T), _p(DE_SERVICE_START_TO, _T),
    _p(DE_SERVICE_STOP_FROM, _T), _p(DE_SERVICE_STOP_TO, _T),
    _p(DE_HCFT_CODE, _C, multiple=True),
    _p(DE_EVENT_CODE_LIST, _C, multiple=True, and_or=True),
    _p(DE_CONFIDENTIALITY_CODE, _C, multiple=True, and_or=True),
    _p(DE_AUTHOR_PERSON, _L, multiple=True),
    _p(DE_FORMAT_CODE, _C, multiple=True),
    _p(DE_STATUS, _S, multiple=True),
    _p(DE_TYPE, _S, multiple=True),
    _p(DE_DOCUMENT_AVAILABILITY, _S, multiple=True),
    *_COMMON,
)

#: Filters on the documents of GetAll / Get*AndContents (ITI TF-2a 3.18.4.1.2.3.7.4, .11, .12).
_CONTENT_FILTERS = (
    _p(DE_FORMAT_CODE, _C, multiple=True),
    _p(DE_CONFIDENTIALITY_CODE, _C, multiple=True, and_or=True),
    _p(DE_TYPE, _S, multiple=True),
)

_FOLDER_FILTERS = (
    _p(FOLDER_LAST_UPDATE_FROM, _T), _p(FOLDER_LAST_UPDATE_TO, _T),
    _p(FOLDER_CODE_LIST, _C, multiple=True, and_or=True),
    _p(FOLDER_STATUS, _S, multiple=True),
    *_COMMON,
)

SPECS: dict[StoredQuery, QuerySpec] = {
    StoredQuery.FindDocuments: QuerySpec(
        StoredQuery.FindDocuments,
        _table(_p(DE_PATIENT_ID, _S), *_FIND_DOCUMENTS_FILTERS),
        required=(DE_PATIENT_ID, DE_STATUS)),
    StoredQuery.FindDocumentsByReferenceId: QuerySpec(
        StoredQuery.FindDocumentsByReferenceId,
        _table(_p(DE_PATIENT_ID, _S), *_FIND_DOCUMENTS_FILTERS,
               _p(DE_REFERENCE_ID_LIST, _S, multiple=True, and_or=True)),
        required=(DE_PATIENT_ID, DE_STATUS, DE_REFERENCE_ID_LIST)),
    StoredQuery.FindSubmissionSets: QuerySpec(
        StoredQuery.FindSubmissionSets,
        _table(_p(SS_PATIENT_ID, _S), _p(SS_SOURCE_ID, _S, multiple=True),
               _p(SS_SUBMISSION_TIME_FROM, _T), _p(SS_SUBMISSION_TIME_TO, _T),
               _p(SS_AUTHOR_PERSON, _L), _p(SS_CONTENT_TYPE, _C, multiple=True),
               _p(SS_STATUS, _S, multiple=True), *_COMMON),
        required=(SS_PATIENT_ID, SS_STATUS)),
    StoredQuery.FindFolders: QuerySpec(
        StoredQuery.FindFolders,
        _table(_p(FOLDER_PATIENT_ID, _S), *_FOLDER_FILTERS),
        required=(FOLDER_PATIENT_ID, FOLDER_STATUS)),
    StoredQuery.GetAll: QuerySpec(
        StoredQuery.GetAll,
        _table(_p(PATIENT_ID, _S), _p(DE_STATUS, _S, multiple=True), _p(SS_STATUS, _S, multiple=True),
               _p(FOLDER_STATUS, _S, multiple=True), *_CONTENT_FILTERS,
               _p(ASSOCIATION_STATUS, _S, multiple=True), *_COMMON),
        required=(PATIENT_ID, DE_STATUS, SS_STATUS, FOLDER_STATUS)),
    StoredQuery.GetDocuments: QuerySpec(
        StoredQuery.GetDocuments,
        _table(_p(DE_ENTRY_UUID, _S, multiple=True), _p(DE_UNIQUE_ID, _S, multiple=True),
               _p(DE_LOGICAL_ID, _S, multiple=True), *_COMMON),
        exactly_one_of=((DE_ENTRY_UUID, DE_UNIQUE_ID, DE_LOGICAL_ID),)),
    StoredQuery.GetFolders: QuerySpec(
        StoredQuery.GetFolders,
        _table(_p(FOLDER_ENTRY_UUID, _S, multiple=True), _p(FOLDER_UNIQUE_ID, _S, multiple=True),
               _p(FOLDER_LOGICAL_ID, _S, multiple=True), *_COMMON),
        exactly_one_of=((FOLDER_ENTRY_UUID, FOLDER_UNIQUE_ID, FOLDER_LOGICAL_ID),)),
    StoredQuery.GetAssociations: QuerySpec(
        StoredQuery.GetAssociations,
        _table(_p(UUID, _S, multiple=True), _p(ASSOCIATION_STATUS, _S, multiple=True), *_COMMON),
        required=(UUID,)),
    StoredQuery.GetDocumentsAndAssociations: QuerySpec(
        StoredQuery.GetDocumentsAndAssociations,
        _table(_p(DE_ENTRY_UUID, _S, multiple=True), _p(DE_UNIQUE_ID, _S, multiple=True),
               _p(ASSOCIATION_STATUS, _S, multiple=True), *_COMMON),
        exactly_one_of=((DE_ENTRY_UUID, DE_UNIQUE_ID),)),
    StoredQuery.GetSubmissionSets: QuerySpec(
        StoredQuery.GetSubmissionSets,
        _table(_p(UUID, _S, multiple=True), _p(ASSOCIATION_STATUS, _S, multiple=True), *_COMMON),
        required=(UUID,)),
    StoredQuery.GetSubmissionSetAndContents: QuerySpec(
        StoredQuery.GetSubmissionSetAndContents,
        _table(_p(SS_ENTRY_UUID, _S), _p(SS_UNIQUE_ID, _S), *_CONTENT_FILTERS,
               _p(ASSOCIATION_STATUS, _S, multiple=True), *_COMMON),
        exactly_one_of=((SS_ENTRY_UUID, SS_UNIQUE_ID),)),
    StoredQuery.GetFolderAndContents: QuerySpec(
        StoredQuery.GetFolderAndContents,
        _table(_p(FOLDER_ENTRY_UUID, _S), _p(FOLDER_UNIQUE_ID, _S), *_CONTENT_FILTERS,
               _p(ASSOCIATION_STATUS, _S, multiple=True), *_COMMON),
        exactly_one_of=((FOLDER_ENTRY_UUID, FOLDER_UNIQUE_ID),)),
    StoredQuery.GetFoldersForDocument: QuerySpec(
        StoredQuery.GetFoldersForDocument,
        _table(_p(DE_ENTRY_UUID, _S), _p(DE_UNIQUE_ID, _S),
               _p(ASSOCIATION_STATUS, _S, multiple=True), *_COMMON),
        exactly_one_of=((DE_ENTRY_UUID, DE_UNIQUE_ID),)),
    StoredQuery.GetRelatedDocuments: QuerySpec(
        StoredQuery.GetRelatedDocuments,
        _table(_p(DE_ENTRY_UUID, _S), _p(DE_UNIQUE_ID, _S), _p(ASSOCIATION_TYPES, _S, multiple=True),
               _p(DE_TYPE, _S, multiple=True), _p(ASSOCIATION_STATUS, _S, multiple=True), *_COMMON),
        required=(ASSOCIATION_TYPES,),
        exactly_one_of=((DE_ENTRY_UUID, DE_UNIQUE_ID),)),
    # ITI-51 (ITI TF-2b 3.51.4.1.2.3): the patient id becomes optional and multi-valued.
    StoredQuery.FindDocumentsForMultiplePatients: QuerySpec(
        StoredQuery.FindDocumentsForMultiplePatients,
        _table(_p(DE_PATIENT_ID, _S, multiple=True), *_FIND_DOCUMENTS_FILTERS),
        required=(DE_STATUS,),
        at_least_one_of=((DE_PATIENT_ID, DE_CLASS_CODE, DE_EVENT_CODE_LIST, DE_HCFT_CODE),)),
    StoredQuery.FindFoldersForMultiplePatients: QuerySpec(
        StoredQuery.FindFoldersForMultiplePatients,
        _table(_p(FOLDER_PATIENT_ID, _S, multiple=True), *_FOLDER_FILTERS),
        required=(FOLDER_STATUS,),
        # NIST makes the code list required, IPF "at least one of": we take the latter (ITI TF-2b 3.51).
        at_least_one_of=((FOLDER_PATIENT_ID, FOLDER_CODE_LIST),)),
}


# --- the value grammar ---------------------------------------------------------------------------

class ValueSyntaxError(ValueError):
    """A rim:Value text that is not in the stored-query value grammar."""


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    quoted: bool


_UNQUOTED_RE = re.compile(r"[^\s,()']+")


def tokenize_value(raw: str) -> list[Token]:
    """Split one ``rim:Value`` text into its values.

    ``'a'`` -> [a]; ``('a', 'b')`` -> [a, b]; ``20041224`` -> [20041224]; ``(1, 2)`` -> [1, 2].
    A quote inside a quoted string is doubled (``'O''Brien'``).
    """
    text = raw.strip()
    if not text:
        raise ValueSyntaxError("empty value")
    in_list = text.startswith("(")
    if in_list:
        if not text.endswith(")"):
            raise ValueSyntaxError(f"unbalanced parenthesis in {raw!r}")
        text = text[1:-1]
    tokens: list[Token] = []
    pos, n = 0, len(text)
    expect_value = True
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos >= n:
            break
        if not expect_value:
            if text[pos] != ",":
                raise ValueSyntaxError(f"expected ',' at position {pos} in {raw!r}")
            if not in_list:
                raise ValueSyntaxError(f"several values outside parentheses in {raw!r}")
            pos += 1
            expect_value = True
            continue
        if text[pos] == "'":
            pos += 1
            chunks: list[str] = []
            while True:
                end = text.find("'", pos)
                if end < 0:
                    raise ValueSyntaxError(f"unterminated quoted string in {raw!r}")
                chunks.append(text[pos:end])
                if end + 1 < n and text[end + 1] == "'":  # doubled quote = one quote
                    chunks.append("'")
                    pos = end + 2
                    continue
                pos = end + 1
                break
            tokens.append(Token("".join(chunks), True))
        else:
            match = _UNQUOTED_RE.match(text, pos)
            if not match:
                raise ValueSyntaxError(f"unexpected {text[pos]!r} at position {pos} in {raw!r}")
            tokens.append(Token(match.group(), False))
            pos = match.end()
        expect_value = False
    if expect_value and tokens:
        raise ValueSyntaxError(f"trailing ',' in {raw!r}")
    if not tokens:
        raise ValueSyntaxError(f"empty list in {raw!r}")
    return tokens


# --- value types ---------------------------------------------------------------------------------

# ASCII digits, matched whole: ``\d`` would take Unicode digits and ``$`` a trailing newline.
_DTM_RE = re.compile(r"(?P<digits>[0-9]{4}(?:[0-9]{2}){0,5})(?:\.[0-9]{1,4})?(?P<tz>[+-][0-9]{4})?")


def normalize_dtm(value: str) -> str:
    """An HL7 DTM as the 14-digit UTC instant ``YYYYMMDDhhmmss`` it starts at.

    A partial time stands for the earliest instant it covers (``2005`` -> ``20050101000000``);
    a time zone offset, allowed in query parameters, is folded into UTC; fractions are dropped
    (XDS metadata times have at most second precision).  Raises ValueError if not a valid DTM.
    """
    match = _DTM_RE.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not an HL7 DTM (YYYY[MM[DD[hh[mm[ss]]]]])")
    digits = match.group("digits")
    padded = digits + "0101000000"[len(digits) - 4:]
    instant = datetime.strptime(padded, "%Y%m%d%H%M%S")  # also checks month/day/hour ranges
    tz = match.group("tz")
    if tz:
        sign = 1 if tz[0] == "+" else -1
        instant -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5]))
    return instant.strftime("%Y%m%d%H%M%S")


def parse_code(value: str) -> Code:
    """``code^^scheme`` -> Code; both parts required (ITI TF-2a 3.18.4.1.2.3.5)."""
    code, sep, scheme = value.partition("^^")
    if not sep or not code or not scheme:
        raise ValueError(f"{value!r} is not a coded value 'code^^scheme'")
    return Code(code, scheme)


def _convert(param: Param, token: Token) -> object:
    if param.kind in (Kind.STRING, Kind.LIKE, Kind.CODE):
        if not token.quoted:
            raise ValueError(f"{token.text!r} must be a quoted string")
        if not token.text:
            raise ValueError("empty string")
        return parse_code(token.text) if param.kind is Kind.CODE else token.text
    # Numbers and times are unquoted per the TF; a quoted one is tolerated (common client habit).
    if param.kind is Kind.DTM:
        return normalize_dtm(token.text)
    if not token.text.isdigit():
        raise ValueError(f"{token.text!r} is not an integer")
    return int(token.text)


# --- parsed parameters ---------------------------------------------------------------------------

@dataclass
class QueryParameters:
    """The validated parameters of one request.

    ``groups[name]`` holds one list of converted values per Slot (more than one group only for
    AND/OR parameters).  Use :meth:`value`, :meth:`values` and :meth:`and_groups`.
    """

    spec: QuerySpec
    groups: dict[str, list[list[object]]] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.groups

    def value(self, name: str) -> object | None:
        """A single-valued parameter's value, or None when absent."""
        groups = self.groups.get(name)
        return groups[0][0] if groups else None

    def values(self, name: str) -> list[object]:
        """All values of a (non-repeatable) multi-valued parameter; [] when absent."""
        groups = self.groups.get(name)
        return list(groups[0]) if groups else []

    def and_groups(self, name: str) -> list[list[object]]:
        """AND of OR-lists: one list per Slot occurrence; [] when absent."""
        return [list(g) for g in self.groups.get(name, [])]


def spec_for(query_id: str) -> QuerySpec:
    """The specification of a stored query id, or XDSUnknownStoredQuery (ITI TF-2a 3.18.4.1.2.3.7)."""
    try:
        return SPECS[StoredQuery(query_id)]
    except ValueError:
        raise XdsError.of(ErrorCode.XDSUnknownStoredQuery, f"Unknown stored query id {query_id!r}") from None


def parse_parameters(query_id: str, slots: Iterable[tuple[str, list[str]]]) -> QueryParameters:
    """Check and convert the slots of an AdhocQuery against its stored query's table.

    Raises XdsError carrying every finding (XDSUnknownStoredQuery alone if the id is unknown).
    """
    spec = spec_for(query_id)
    slots = list(slots)
    errors: list[RegistryError] = []
    result = QueryParameters(spec)

    def error(code: ErrorCode, context: str, name: str) -> None:
        errors.append(RegistryError(code, context, location=name))

    for name, raw_values in slots:
        param = spec.params.get(name)
        if param is None:
            continue  # unknown parameters are ignored (NIST SQ-05, IPF)
        if name in result.groups and not param.and_or:
            error(ErrorCode.XDSStoredQueryParamNumber,
                  f"Parameter {name} may appear only once (only AND/OR code parameters repeat)", name)
            continue
        tokens: list[Token] = []
        try:
            if not raw_values:
                raise ValueSyntaxError("no value")
            for raw in raw_values:
                tokens.extend(tokenize_value(raw))
        except ValueSyntaxError as exc:
            error(ErrorCode.XDSRegistryError, f"Parameter {name}: malformed value: {exc}", name)
            continue
        if not param.multiple and len(tokens) > 1:
            error(ErrorCode.XDSStoredQueryParamNumber,
                  f"Parameter {name} takes a single value, got {len(tokens)}", name)
            continue
        converted: list[object] = []
        bad = False
        for token in tokens:
            try:
                converted.append(_convert(param, token))
            except ValueError as exc:
                error(ErrorCode.XDSRegistryError, f"Parameter {name}: {exc}", name)
                bad = True
        if not bad:
            result.groups.setdefault(name, []).append(converted)

    present = {name for name, _ in slots if name in spec.params}
    for name in spec.required:
        if name not in present:
            error(ErrorCode.XDSStoredQueryMissingParam, f"Required parameter {name} is missing", name)
    for group in spec.exactly_one_of:
        given = [n for n in group if n in present]
        if not given:
            error(ErrorCode.XDSStoredQueryMissingParam,
                  f"One of {', '.join(group)} is required", group[0])
        elif len(given) > 1:
            error(ErrorCode.XDSStoredQueryParamNumber,
                  f"Only one of {', '.join(group)} may be given, got {', '.join(given)}", given[1])
    for group in spec.at_least_one_of:
        if not any(n in present for n in group):
            error(ErrorCode.XDSStoredQueryMissingParam,
                  f"At least one of {', '.join(group)} is required", group[0])
    if errors:
        raise XdsError(errors)
    return result
