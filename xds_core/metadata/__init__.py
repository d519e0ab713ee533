"""The XDS metadata model: plain dataclasses, no lxml, no Django.

See :mod:`xds_core.metadata.objects` (DocumentEntry, SubmissionSet,
Folder, Association, Submission) and :mod:`xds_core.metadata.values`
(Code, Author, CX, XCN, XON, XTN, DTM).
"""

from xds_core.metadata.objects import (  # noqa: F401
    Association,
    Classification,
    DocumentEntry,
    ExternalIdentifier,
    Folder,
    InternationalString,
    LocalizedString,
    ObjectRef,
    OpaqueElement,
    RegistryObject,
    RegistryPackage,
    Slot,
    Submission,
    SubmissionSet,
    new_id,
)
from xds_core.metadata.values import CX, DTM, XCN, XON, XTN, Author, Code  # noqa: F401
