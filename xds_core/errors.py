"""XDS error codes, severities and the exceptions that carry them.

The one home of the IHE error vocabulary (ITI TF-3 Table 4.2.4.1-2).
Business errors travel in a ``RegistryErrorList`` (never as SOAP Faults); the
single place that renders them is :mod:`xds_core.http.endpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    """IHE XDS error codes (ITI TF-3 Table 4.2.4.1-2)."""

    XDSRegistryError = "XDSRegistryError"
    XDSRepositoryError = "XDSRepositoryError"
    XDSRegistryMetadataError = "XDSRegistryMetadataError"
    XDSRepositoryMetadataError = "XDSRepositoryMetadataError"
    XDSUnknownPatientId = "XDSUnknownPatientId"
    XDSPatientIdDoesNotMatch = "XDSPatientIdDoesNotMatch"
    XDSDuplicateUniqueIdInRegistry = "XDSDuplicateUniqueIdInRegistry"
    XDSNonIdenticalHash = "XDSNonIdenticalHash"
    XDSNonIdenticalSize = "XDSNonIdenticalSize"
    XDSRegistryDuplicateUniqueIdInMessage = "XDSRegistryDuplicateUniqueIdInMessage"
    XDSRepositoryDuplicateUniqueIdInMessage = "XDSRepositoryDuplicateUniqueIdInMessage"
    XDSRegistryDeprecatedDocumentError = "XDSRegistryDeprecatedDocumentError"
    XDSMissingDocument = "XDSMissingDocument"
    XDSMissingDocumentMetadata = "XDSMissingDocumentMetadata"
    XDSRegistryNotAvailable = "XDSRegistryNotAvailable"
    XDSRegistryBusy = "XDSRegistryBusy"
    XDSRepositoryBusy = "XDSRepositoryBusy"
    XDSRegistryOutOfResources = "XDSRegistryOutOfResources"
    XDSRepositoryOutOfResources = "XDSRepositoryOutOfResources"
    XDSExtraMetadataNotSaved = "XDSExtraMetadataNotSaved"
    XDSTooManyResults = "XDSTooManyResults"
    XDSUnknownStoredQuery = "XDSUnknownStoredQuery"
    XDSStoredQueryMissingParam = "XDSStoredQueryMissingParam"
    XDSStoredQueryParamNumber = "XDSStoredQueryParamNumber"
    XDSResultNotSinglePatient = "XDSResultNotSinglePatient"
    XDSDocumentUniqueIdError = "XDSDocumentUniqueIdError"
    XDSUnknownRepositoryId = "XDSUnknownRepositoryId"
    XDSMissingHomeCommunityId = "XDSMissingHomeCommunityId"
    XDSUnknownCommunity = "XDSUnknownCommunity"
    XDSUnavailableCommunity = "XDSUnavailableCommunity"
    InvalidDocumentContent = "InvalidDocumentContent"
    XDSMetadataUpdateError = "XDSMetadataUpdateError"
    XDSMetadataUpdateOperationError = "XDSMetadataUpdateOperationError"
    XDSMetadataVersionError = "XDSMetadataVersionError"
    XDSPatientIDReconciliationError = "XDSPatientIDReconciliationError"
    UnresolvedReferenceException = "UnresolvedReferenceException"
    ReferencesExistException = "ReferencesExistException"
    XDSUnreferencedObjectException = "XDSUnreferencedObjectException"
    XDSRemoveDocumentsError = "XDSRemoveDocumentsError"


class WadoErrorCode(StrEnum):
    """DICOM WADO-WS error codes, used by the Imaging Document Source in RAD-69 responses.

    DICOM PS3.18 (2014b) 6.4.4 defines them for the WADO-WS RetrieveImagingDocumentSet
    action, which "corresponds to the IHE XDS-I.b transaction RAD-69" (PS3.18 6.4; the
    error list also accepts the ITI TF error codes); dcm4chee-arc-light's Imaging Document
    Source answers RAD-69 transfer-syntax problems with them.  IHE RAD TF names no code for
    "requested transfer syntax not supported" (RAD TF-3 4.69).
    """

    #: Web Server does not support the requested format or transfer syntax.
    UnsupportedTransferSyntax = "urn:dicom:wado:0006"
    #: The requested instance(s) cannot be provided in the requested format or transfer syntax.
    CannotProvideInTransferSyntax = "urn:dicom:wado:0007"


class Severity(StrEnum):
    ERROR = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Error"
    WARNING = "urn:oasis:names:tc:ebxml-regrep:ErrorSeverityType:Warning"


@dataclass(frozen=True, slots=True)
class RegistryError:
    """One ``rs:RegistryError``: errorCode, codeContext and severity are required."""

    error_code: str
    code_context: str
    severity: Severity = Severity.ERROR
    location: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == Severity.ERROR

    @classmethod
    def warning(cls, error_code: str, code_context: str, location: str = "") -> RegistryError:
        return cls(error_code, code_context, Severity.WARNING, location)


class XdsError(Exception):
    """A transaction failed with one or more RegistryErrors.

    Raised by domain code; turned into a Failure response (never a SOAP Fault)
    by the endpoint.  Validators collect all findings and raise once.
    """

    def __init__(self, errors: RegistryError | list[RegistryError] | tuple[RegistryError, ...]):
        self.errors: list[RegistryError] = [errors] if isinstance(errors, RegistryError) else list(errors)
        super().__init__("; ".join(f"{e.error_code}: {e.code_context}" for e in self.errors))

    @classmethod
    def of(cls, error_code: str, code_context: str, location: str = "") -> XdsError:
        return cls(RegistryError(error_code, code_context, Severity.ERROR, location))
