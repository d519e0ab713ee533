"""XDS / XDS-I vocabularies, declared once as enums.

Sources: ITI TF-2 / RAD TF-3 WSDLs, ITI TF-2a 3.18.4.1.2.3.7 (stored queries), ITI TF-3 4.2.2-4.2.5.
Nothing else in the code base spells one of these URIs or UUIDs.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """wsa:Action values (ITI TF-2 / RAD TF-3 WSDLs)."""

    ProvideAndRegisterDocumentSet = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
    ProvideAndRegisterDocumentSetResponse = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
    RegisterDocumentSet = "urn:ihe:iti:2007:RegisterDocumentSet-b"
    RegisterDocumentSetResponse = "urn:ihe:iti:2007:RegisterDocumentSet-bResponse"
    RegistryStoredQuery = "urn:ihe:iti:2007:RegistryStoredQuery"
    RegistryStoredQueryResponse = "urn:ihe:iti:2007:RegistryStoredQueryResponse"
    MultiPatientStoredQuery = "urn:ihe:iti:2009:MultiPatientStoredQuery"
    MultiPatientStoredQueryResponse = "urn:ihe:iti:2009:MultiPatientStoredQueryResponse"
    RetrieveDocumentSet = "urn:ihe:iti:2007:RetrieveDocumentSet"
    RetrieveDocumentSetResponse = "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
    RetrieveImagingDocumentSet = "urn:ihe:rad:2009:RetrieveImagingDocumentSet"
    # RAD-69 reuses the ITI-43 response action (XDS-I.b WSDL).
    RetrieveImagingDocumentSetResponse = "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
    UpdateDocumentSet = "urn:ihe:iti:2010:UpdateDocumentSet"
    UpdateDocumentSetResponse = "urn:ihe:iti:2010:UpdateDocumentSetResponse"
    DeleteDocumentSet = "urn:ihe:iti:2010:DeleteDocumentSet"
    DeleteDocumentSetResponse = "urn:ihe:iti:2010:DeleteDocumentSetResponse"
    RemoveDocuments = "urn:ihe:iti:2017:RemoveDocuments"
    RemoveDocumentsResponse = "urn:ihe:iti:2017:RemoveDocumentsResponse"


class ResponseStatus(StrEnum):
    """RegistryResponse/@status (ITI TF-3 4.2.4). PartialSuccess is in the IHE namespace."""

    SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
    FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
    PARTIAL_SUCCESS = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"


class AvailabilityStatus(StrEnum):
    APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
    DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
    SUBMITTED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Submitted"


class DocumentAvailability(StrEnum):
    ONLINE = "urn:ihe:iti:2010:DocumentAvailability:Online"
    OFFLINE = "urn:ihe:iti:2010:DocumentAvailability:Offline"


class ObjectType(StrEnum):
    """@objectType values."""

    STABLE_DOCUMENT_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
    ON_DEMAND_DOCUMENT_ENTRY = "urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248"
    REGISTRY_PACKAGE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:RegistryPackage"
    ASSOCIATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Association"
    CLASSIFICATION = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification"
    EXTERNAL_IDENTIFIER = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier"
    EXTRINSIC_OBJECT = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExtrinsicObject"


class ClassificationNode(StrEnum):
    """Classification nodes that mark a RegistryPackage's kind (ITI TF-3 4.2.3)."""

    SUBMISSION_SET = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
    FOLDER = "urn:uuid:d9d542f3-6cc4-48b6-8870-ea235fbc94c2"
    # Limited-metadata markers: XDR/XDM only, refused by an XDS registry.
    LIMITED_DOCUMENT_ENTRY = "urn:uuid:ab9b591b-83ab-4d03-8f5d-f93b1fb92e85"
    LIMITED_SUBMISSION_SET = "urn:uuid:5003a9db-8d8d-49e6-bf0c-990e34ac7707"
    LIMITED_FOLDER = "urn:uuid:2c144a76-29a9-4b7c-af54-b25409fe7d03"


class ClassificationScheme(StrEnum):
    """Classification schemes of coded attributes (ITI TF-3 4.2.5)."""

    DocumentEntry_author = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
    DocumentEntry_classCode = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
    DocumentEntry_confidentialityCode = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
    DocumentEntry_eventCodeList = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
    DocumentEntry_formatCode = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
    DocumentEntry_healthcareFacilityTypeCode = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
    DocumentEntry_practiceSettingCode = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
    DocumentEntry_typeCode = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
    SubmissionSet_author = "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d"
    SubmissionSet_contentTypeCode = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
    Folder_codeList = "urn:uuid:1ba97051-7806-41a8-a48b-8fce7af683c5"
    Association_documentation = "urn:uuid:abd807a3-4432-4053-87b4-fd82c643d1f3"


class IdentificationScheme(StrEnum):
    """ExternalIdentifier identification schemes (ITI TF-3 4.2.5)."""

    DocumentEntry_patientId = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
    DocumentEntry_uniqueId = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
    SubmissionSet_patientId = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
    SubmissionSet_uniqueId = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
    SubmissionSet_sourceId = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
    Folder_patientId = "urn:uuid:f64ffdf0-4b97-4e06-b79f-a52b38ec2f8a"
    Folder_uniqueId = "urn:uuid:75df8f67-9973-4fbe-a900-df66cefecc5a"


#: rim:Name of each ExternalIdentifier, as written on the wire.
IDENTIFICATION_SCHEME_NAMES: dict[IdentificationScheme, str] = {
    IdentificationScheme.DocumentEntry_patientId: "XDSDocumentEntry.patientId",
    IdentificationScheme.DocumentEntry_uniqueId: "XDSDocumentEntry.uniqueId",
    IdentificationScheme.SubmissionSet_patientId: "XDSSubmissionSet.patientId",
    IdentificationScheme.SubmissionSet_uniqueId: "XDSSubmissionSet.uniqueId",
    IdentificationScheme.SubmissionSet_sourceId: "XDSSubmissionSet.sourceId",
    IdentificationScheme.Folder_patientId: "XDSFolder.patientId",
    IdentificationScheme.Folder_uniqueId: "XDSFolder.uniqueId",
}


class AssociationType(StrEnum):
    HasMember = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
    RPLC = "urn:ihe:iti:2007:AssociationType:RPLC"
    XFRM = "urn:ihe:iti:2007:AssociationType:XFRM"
    APND = "urn:ihe:iti:2007:AssociationType:APND"
    XFRM_RPLC = "urn:ihe:iti:2007:AssociationType:XFRM_RPLC"
    signs = "urn:ihe:iti:2007:AssociationType:signs"
    IsSnapshotOf = "urn:ihe:iti:2010:AssociationType:IsSnapshotOf"
    UpdateAvailabilityStatus = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
    SubmitAssociation = "urn:ihe:iti:2010:AssociationType:SubmitAssociation"


#: Document relationship associations (ITI TF-3 4.2.2): source = new DE, target = existing DE.
RELATIONSHIP_TYPES = frozenset({
    AssociationType.RPLC, AssociationType.XFRM, AssociationType.APND,
    AssociationType.XFRM_RPLC, AssociationType.signs, AssociationType.IsSnapshotOf,
})
#: Relationships that deprecate their target (ITI TF-3 4.2.2.2).
REPLACING_TYPES = frozenset({AssociationType.RPLC, AssociationType.XFRM_RPLC})


class SubmissionSetStatus(StrEnum):
    """HasMember slot SubmissionSetStatus (ITI TF-3 4.2.2.1)."""

    ORIGINAL = "Original"
    REFERENCE = "Reference"


class StoredQuery(StrEnum):
    """Stored query ids (ITI TF-2a 3.18.4.1.2.3.7, ITI-51)."""

    FindDocuments = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
    FindDocumentsByReferenceId = "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492"
    FindSubmissionSets = "urn:uuid:f26abbcb-ac74-4422-8a30-edb644bbc1a9"
    FindFolders = "urn:uuid:958f3006-baad-4929-a4de-ff1114824431"
    GetAll = "urn:uuid:10b545ea-725c-446d-9b95-8aeb444eddf3"
    GetDocuments = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
    GetFolders = "urn:uuid:5737b14c-8a1a-4539-b659-e03a34a5e1e4"
    GetAssociations = "urn:uuid:a7ae438b-4bc2-4642-93e9-be891f7bb155"
    GetDocumentsAndAssociations = "urn:uuid:bab9529a-4a10-40b3-a01f-f68a615d247a"
    GetSubmissionSets = "urn:uuid:51224314-5390-4169-9b91-b1980040715a"
    GetSubmissionSetAndContents = "urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83"
    GetFolderAndContents = "urn:uuid:b909a503-523d-4517-8acf-8e5834dfc4c7"
    GetFoldersForDocument = "urn:uuid:10cae35a-c7f9-4cf5-b61e-fc3278ffb578"
    GetRelatedDocuments = "urn:uuid:d90e5407-b356-4d91-a89f-873917b4b0e6"
    FindDocumentsForMultiplePatients = "urn:uuid:3d1bdb10-39a2-11de-89c2-2f44d94eaa9f"
    FindFoldersForMultiplePatients = "urn:uuid:50d3f5ac-39a2-11de-a1ca-b366239e58df"


class QueryParameter(StrEnum):
    """Stored query parameter names (ITI TF-2a 3.18.4.1.2.3.7 and its tables; ITI-51 3.51.4.1.2)."""

    DE_PATIENT_ID = "$XDSDocumentEntryPatientId"
    DE_CLASS_CODE = "$XDSDocumentEntryClassCode"
    DE_TYPE_CODE = "$XDSDocumentEntryTypeCode"
    DE_PRACTICE_SETTING_CODE = "$XDSDocumentEntryPracticeSettingCode"
    DE_CREATION_FROM = "$XDSDocumentEntryCreationTimeFrom"
    DE_CREATION_TO = "$XDSDocumentEntryCreationTimeTo"
    DE_SERVICE_START_FROM = "$XDSDocumentEntryServiceStartTimeFrom"
    DE_SERVICE_START_TO = "$XDSDocumentEntryServiceStartTimeTo"
    DE_SERVICE_STOP_FROM = "$XDSDocumentEntryServiceStopTimeFrom"
    DE_SERVICE_STOP_TO = "$XDSDocumentEntryServiceStopTimeTo"
    DE_HCFT_CODE = "$XDSDocumentEntryHealthcareFacilityTypeCode"
    DE_EVENT_CODE_LIST = "$XDSDocumentEntryEventCodeList"
    DE_CONFIDENTIALITY_CODE = "$XDSDocumentEntryConfidentialityCode"
    DE_AUTHOR_PERSON = "$XDSDocumentEntryAuthorPerson"
    DE_FORMAT_CODE = "$XDSDocumentEntryFormatCode"
    DE_STATUS = "$XDSDocumentEntryStatus"
    DE_TYPE = "$XDSDocumentEntryType"
    DE_DOCUMENT_AVAILABILITY = "$XDSDocumentEntryDocumentAvailability"
    DE_REFERENCE_ID_LIST = "$XDSDocumentEntryReferenceIdList"
    DE_ENTRY_UUID = "$XDSDocumentEntryEntryUUID"
    DE_UNIQUE_ID = "$XDSDocumentEntryUniqueId"
    DE_LOGICAL_ID = "$XDSDocumentEntryLogicalID"
    SS_PATIENT_ID = "$XDSSubmissionSetPatientId"
    SS_SOURCE_ID = "$XDSSubmissionSetSourceId"
    SS_SUBMISSION_TIME_FROM = "$XDSSubmissionSetSubmissionTimeFrom"
    SS_SUBMISSION_TIME_TO = "$XDSSubmissionSetSubmissionTimeTo"
    SS_AUTHOR_PERSON = "$XDSSubmissionSetAuthorPerson"
    SS_CONTENT_TYPE = "$XDSSubmissionSetContentType"
    SS_STATUS = "$XDSSubmissionSetStatus"
    SS_ENTRY_UUID = "$XDSSubmissionSetEntryUUID"
    SS_UNIQUE_ID = "$XDSSubmissionSetUniqueId"
    FOLDER_PATIENT_ID = "$XDSFolderPatientId"
    FOLDER_LAST_UPDATE_FROM = "$XDSFolderLastUpdateTimeFrom"
    FOLDER_LAST_UPDATE_TO = "$XDSFolderLastUpdateTimeTo"
    FOLDER_CODE_LIST = "$XDSFolderCodeList"
    FOLDER_STATUS = "$XDSFolderStatus"
    FOLDER_ENTRY_UUID = "$XDSFolderEntryUUID"
    FOLDER_UNIQUE_ID = "$XDSFolderUniqueId"
    FOLDER_LOGICAL_ID = "$XDSFolderLogicalID"
    PATIENT_ID = "$patientId"
    UUID = "$uuid"
    ASSOCIATION_TYPES = "$AssociationTypes"
    ASSOCIATION_STATUS = "$XDSAssociationStatus"
    HOME_COMMUNITY_ID = "$homeCommunityId"
    METADATA_LEVEL = "$MetadataLevel"


#: ITI-51 carries only these; ITI-18 must refuse them.
MULTI_PATIENT_QUERIES = frozenset({
    StoredQuery.FindDocumentsForMultiplePatients, StoredQuery.FindFoldersForMultiplePatients,
})


class ReturnType(StrEnum):
    LeafClass = "LeafClass"
    ObjectRef = "ObjectRef"


class ReferenceIdType(StrEnum):
    """CXi type component of referenceIdList values (ITI TF-3 Table 4.2.3.2-1)."""

    ACCESSION = "urn:ihe:iti:xds:2013:accession"
    ORDER = "urn:ihe:iti:xds:2013:order"
    REFERRAL = "urn:ihe:iti:xds:2013:referral"
    STUDY_INSTANCE_UID = "urn:ihe:iti:xds:2016:studyInstanceUID"
    ENCOUNTER_ID = "urn:ihe:iti:xds:2015:encounterId"
    WORKFLOW_INSTANCE_ID = "urn:ihe:iti:xdw:2013:workflowInstanceId"
    UNIQUE_ID = "urn:ihe:iti:xds:2013:uniqueId"


REFERENCE_ID_LIST_SLOT = "urn:ihe:iti:xds:2013:referenceIdList"

#: Key Object Selection Document Storage SOP Class (DICOM PS3.4 Annex B.5, PS3.6 Annex A): the one
#: definition of this UID in the suite (kos, the repository, the harness and the bench import it).
KOS_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.88.59"
#: formatCode of an XDS-I.b manifest: the KOS SOP Class UID (RAD TF-3 4.68.4.1.2.3.2).
KOS_FORMAT_CODE = KOS_SOP_CLASS_UID
DICOM_UID_REGISTRY = "1.2.840.10008.2.6.1"
DICOM_MIME_TYPE = "application/dicom"
