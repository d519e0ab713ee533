"""Domain exceptions of our DICOM services and the DIMSE status each one maps to.

One table, so an SCP handler never invents a status code: it raises a
:class:`DicomServiceError` subclass (or lets an unexpected exception escape) and
:func:`status_for` turns it into the status word sent back.  Codes are from
DICOM PS3.7 Annex C (status encoding), PS3.4 Table B.2-1 (Storage: C-STORE) and
PS3.4 Annex F.7 (Modality Performed Procedure Step: N-CREATE / N-SET), with the
general N-service codes of PS3.7 Table 10.1-1 / 10.3-1.
"""

from __future__ import annotations

from enum import IntEnum


class DimseStatus(IntEnum):
    SUCCESS = 0x0000
    # PS3.7 Annex C / Table 10.x-1 (N-CREATE, N-SET)
    NO_SUCH_ATTRIBUTE = 0x0105
    INVALID_ATTRIBUTE_VALUE = 0x0106
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_SOP_INSTANCE = 0x0112
    INVALID_SOP_INSTANCE = 0x0117  # PS3.7 Annex C: the UID violates the UID construction rules
    NO_SUCH_SOP_CLASS = 0x0118
    MISSING_ATTRIBUTE = 0x0120
    MISSING_ATTRIBUTE_VALUE = 0x0121
    # PS3.4 Table B.2-1 (C-STORE)
    OUT_OF_RESOURCES = 0xA700
    #: 0xA7xx is "Refused: Out of Resources" (PS3.4 Table B.2-1); the low byte is the SCP's to choose.
    #: 0xA7DF (for "deflate") tells a refused decompression bomb apart, in logs and tests, from the
    #: 0xA700 this listener answers for its own unexpected failures.
    INFLATED_DATASET_TOO_LARGE = 0xA7DF
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    # PS3.4 F.7.2.2 (MPPS N-SET): "Performed Procedure Step Object may no longer be updated"
    MAY_NO_LONGER_BE_UPDATED = 0xA710


class DicomServiceError(Exception):
    """A request our SCP refuses; ``status`` is the DIMSE status to answer with."""

    status: DimseStatus = DimseStatus.PROCESSING_FAILURE

    def __init__(self, message: str, *, status: DimseStatus | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class NoSuchInstance(DicomServiceError):
    """N-SET for an SOP instance we never created (PS3.4 F.7.2.2: 0x0112)."""

    status = DimseStatus.NO_SUCH_SOP_INSTANCE


class InvalidInstance(DicomServiceError):
    """An SOP Instance UID that is not a UID (PS3.5 9.1), e.g. ``../x``: 0x0117 Invalid SOP Instance."""

    status = DimseStatus.INVALID_SOP_INSTANCE


class DuplicateInstance(DicomServiceError):
    """N-CREATE for an SOP Instance UID that already exists (0x0111)."""

    status = DimseStatus.DUPLICATE_SOP_INSTANCE


class MissingAttribute(DicomServiceError):
    """A Type 1 attribute is absent (0x0120)."""

    status = DimseStatus.MISSING_ATTRIBUTE


class InvalidAttributeValue(DicomServiceError):
    """An attribute value is not allowed, e.g. an unknown Performed Procedure Step Status (0x0106)."""

    status = DimseStatus.INVALID_ATTRIBUTE_VALUE


class MayNoLongerBeUpdated(DicomServiceError):
    """N-SET on an MPPS that is already COMPLETED or DISCONTINUED (PS3.4 F.7.2.2: 0xA710)."""

    status = DimseStatus.MAY_NO_LONGER_BE_UPDATED


class DatasetMismatch(DicomServiceError):
    """C-STORE: the data set lacks the identifying UIDs or contradicts the command (0xA900)."""

    status = DimseStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS


class CannotUnderstand(DicomServiceError):
    """C-STORE: a data set we cannot parse, or without its SOP Instance UID (0008,0018)
    (PS3.4 Table B.2-1: 0xC000 "Error: Cannot understand"; dcmtk's storescp answers the same when
    the data set lacks its SOP Class / Instance UIDs)."""

    status = DimseStatus.CANNOT_UNDERSTAND


class DatasetTooLarge(DicomServiceError):
    """C-STORE: a Deflated Explicit VR Little Endian data set (PS3.5 A.5) that inflates past our limit
    (PS3.4 Table B.2-1: 0xA7xx "Refused: Out of Resources"; here 0xA7DF)."""

    status = DimseStatus.INFLATED_DATASET_TOO_LARGE


def status_for(exc: BaseException, *, service: str = "N") -> int:
    """DIMSE status for an exception raised while handling a request.

    Known domain errors carry their status; anything else is a failure of ours:
    0x0110 Processing failure for N-services; C-STORE has no "processing failure", and
    "Cannot understand" (0xC000) would blame the sender, so it answers 0xA700 Out of
    resources (PS3.4 Table B.2-1).
    """
    if isinstance(exc, DicomServiceError):
        return int(exc.status)
    return int(DimseStatus.OUT_OF_RESOURCES if service == "C-STORE" else DimseStatus.PROCESSING_FAILURE)
