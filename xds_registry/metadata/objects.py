"""ebRIM registry objects as XDS sees them.

Design: every object keeps the *generic* ebRIM content it arrived with (slots,
classifications, external identifiers, names, unknown attributes) so that a
parse -> serialize round trip is faithful, and offers *typed* accessors for
the XDS attributes on top (``entry.patient_id``, ``entry.class_code``...).
The accessors read and write the generic content, so there is one source of
truth per attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xds_registry.ebxml.vocabulary import (
    AssociationType,
    ClassificationNode,
    ClassificationScheme,
    IdentificationScheme,
    ObjectType,
    REFERENCE_ID_LIST_SLOT,
)
from xds_registry.metadata.values import Author, Code


@dataclass
class Slot:
    name: str
    values: list[str] = field(default_factory=list)
    slot_type: str | None = None


@dataclass
class LocalizedString:
    value: str
    lang: str | None = None
    charset: str | None = None


@dataclass
class InternationalString:
    strings: list[LocalizedString] = field(default_factory=list)

    @property
    def text(self) -> str | None:
        return self.strings[0].value if self.strings else None

    @classmethod
    def of(cls, text: str | None, lang: str | None = None) -> InternationalString:
        return cls([LocalizedString(text, lang)] if text is not None else [])


@dataclass
class _Identifiable:
    id: str = ""
    home: str | None = None
    slots: list[Slot] = field(default_factory=list)
    #: Attributes we do not model, kept for a faithful round trip ({clark-name: value}).
    extra_attributes: dict[str, str] = field(default_factory=dict)

    # --- slots -----------------------------------------------------------------
    def slot(self, name: str) -> Slot | None:
        return next((s for s in self.slots if s.name == name), None)

    def slot_values(self, name: str) -> list[str]:
        found = self.slot(name)
        return list(found.values) if found else []

    def slot_value(self, name: str) -> str | None:
        values = self.slot_values(name)
        return values[0] if values else None

    def set_slot(self, name: str, values: list[str] | str | None) -> None:
        if values is None:
            self.slots = [s for s in self.slots if s.name != name]
            return
        if isinstance(values, str):
            values = [values]
        existing = self.slot(name)
        if existing:
            existing.values = list(values)
        else:
            self.slots.append(Slot(name, list(values)))


@dataclass
class RegistryObject(_Identifiable):
    lid: str | None = None
    object_type: str | None = None
    status: str | None = None
    name: InternationalString = field(default_factory=InternationalString)
    description: InternationalString = field(default_factory=InternationalString)
    version_name: str | None = None
    classifications: list[Classification] = field(default_factory=list)
    external_identifiers: list[ExternalIdentifier] = field(default_factory=list)

    # --- classifications -----------------------------------------------------
    def classifications_of(self, scheme: str) -> list[Classification]:
        return [c for c in self.classifications if c.classification_scheme == scheme]

    def codes(self, scheme: str) -> list[Code]:
        return [c.code for c in self.classifications_of(scheme)]

    def code(self, scheme: str) -> Code | None:
        codes = self.codes(scheme)
        return codes[0] if codes else None

    def set_codes(self, scheme: str, codes: list[Code]) -> None:
        self.classifications = [c for c in self.classifications if c.classification_scheme != scheme]
        for code in codes:
            self.classifications.append(Classification.for_code(scheme, self.id, code))

    def has_node(self, node: str) -> bool:
        return any(c.classification_node == node for c in self.classifications)

    def authors(self, scheme: str) -> list[Author]:
        return [Author.from_slots({s.name: s.values for s in c.slots}) for c in self.classifications_of(scheme)]

    # --- external identifiers -----------------------------------------------
    def external_id(self, scheme: str) -> str | None:
        return next((e.value for e in self.external_identifiers if e.identification_scheme == scheme), None)

    def set_external_id(self, scheme: IdentificationScheme, value: str) -> None:
        from xds_registry.ebxml.vocabulary import IDENTIFICATION_SCHEME_NAMES

        for ext in self.external_identifiers:
            if ext.identification_scheme == scheme:
                ext.value = value
                return
        self.external_identifiers.append(ExternalIdentifier(
            id="", identification_scheme=scheme, value=value, registry_object=self.id,
            name=InternationalString.of(IDENTIFICATION_SCHEME_NAMES[scheme])))


@dataclass
class Classification(RegistryObject):
    classification_scheme: str | None = None
    classified_object: str = ""
    classification_node: str | None = None
    node_representation: str | None = None

    @property
    def code(self) -> Code:
        return Code(code=self.node_representation or "",
                    scheme=self.slot_value("codingScheme") or "",
                    display_name=self.name.text)

    @classmethod
    def for_code(cls, scheme: str, classified_object: str, code: Code) -> Classification:
        return cls(id="", classification_scheme=scheme, classified_object=classified_object,
                   node_representation=code.code, slots=[Slot("codingScheme", [code.scheme])],
                   name=InternationalString.of(code.display_name))


@dataclass
class ExternalIdentifier(RegistryObject):
    identification_scheme: str = ""
    value: str = ""
    registry_object: str = ""


@dataclass
class ObjectRef(_Identifiable):
    """A reference to an object not in the message (``rim:ObjectRef``)."""


@dataclass
class DocumentEntry(RegistryObject):
    """``rim:ExtrinsicObject`` (ITI TF-3 4.2.3.2)."""

    mime_type: str = ""
    is_opaque: str | None = None

    @property
    def is_on_demand(self) -> bool:
        return self.object_type == ObjectType.ON_DEMAND_DOCUMENT_ENTRY

    patient_id = property(lambda self: self.external_id(IdentificationScheme.DocumentEntry_patientId),
                          lambda self, v: self.set_external_id(IdentificationScheme.DocumentEntry_patientId, v))
    unique_id = property(lambda self: self.external_id(IdentificationScheme.DocumentEntry_uniqueId),
                         lambda self, v: self.set_external_id(IdentificationScheme.DocumentEntry_uniqueId, v))
    class_code = property(lambda self: self.code(ClassificationScheme.DocumentEntry_classCode))
    type_code = property(lambda self: self.code(ClassificationScheme.DocumentEntry_typeCode))
    format_code = property(lambda self: self.code(ClassificationScheme.DocumentEntry_formatCode))
    healthcare_facility_type_code = property(
        lambda self: self.code(ClassificationScheme.DocumentEntry_healthcareFacilityTypeCode))
    practice_setting_code = property(lambda self: self.code(ClassificationScheme.DocumentEntry_practiceSettingCode))
    confidentiality_code = property(lambda self: self.codes(ClassificationScheme.DocumentEntry_confidentialityCode))
    event_code_list = property(lambda self: self.codes(ClassificationScheme.DocumentEntry_eventCodeList))
    author = property(lambda self: self.authors(ClassificationScheme.DocumentEntry_author))
    creation_time = property(lambda self: self.slot_value("creationTime"))
    service_start_time = property(lambda self: self.slot_value("serviceStartTime"))
    service_stop_time = property(lambda self: self.slot_value("serviceStopTime"))
    language_code = property(lambda self: self.slot_value("languageCode"))
    source_patient_id = property(lambda self: self.slot_value("sourcePatientId"))
    source_patient_info = property(lambda self: self.slot_values("sourcePatientInfo"))
    legal_authenticator = property(lambda self: self.slot_value("legalAuthenticator"))
    hash = property(lambda self: self.slot_value("hash"), lambda self, v: self.set_slot("hash", v))
    size = property(lambda self: self.slot_value("size"), lambda self, v: self.set_slot("size", v))
    repository_unique_id = property(lambda self: self.slot_value("repositoryUniqueId"),
                                    lambda self, v: self.set_slot("repositoryUniqueId", v))
    reference_id_list = property(lambda self: self.slot_values(REFERENCE_ID_LIST_SLOT))
    document_availability = property(lambda self: self.slot_value("documentAvailability"))
    title = property(lambda self: self.name.text)
    comments = property(lambda self: self.description.text)


@dataclass
class RegistryPackage(RegistryObject):
    """``rim:RegistryPackage``: a SubmissionSet or a Folder, told apart by classification node."""


@dataclass
class SubmissionSet(RegistryPackage):
    patient_id = property(lambda self: self.external_id(IdentificationScheme.SubmissionSet_patientId),
                          lambda self, v: self.set_external_id(IdentificationScheme.SubmissionSet_patientId, v))
    unique_id = property(lambda self: self.external_id(IdentificationScheme.SubmissionSet_uniqueId),
                         lambda self, v: self.set_external_id(IdentificationScheme.SubmissionSet_uniqueId, v))
    source_id = property(lambda self: self.external_id(IdentificationScheme.SubmissionSet_sourceId),
                         lambda self, v: self.set_external_id(IdentificationScheme.SubmissionSet_sourceId, v))
    content_type_code = property(lambda self: self.code(ClassificationScheme.SubmissionSet_contentTypeCode))
    author = property(lambda self: self.authors(ClassificationScheme.SubmissionSet_author))
    submission_time = property(lambda self: self.slot_value("submissionTime"))
    intended_recipient = property(lambda self: self.slot_values("intendedRecipient"))
    title = property(lambda self: self.name.text)
    comments = property(lambda self: self.description.text)


@dataclass
class Folder(RegistryPackage):
    patient_id = property(lambda self: self.external_id(IdentificationScheme.Folder_patientId),
                          lambda self, v: self.set_external_id(IdentificationScheme.Folder_patientId, v))
    unique_id = property(lambda self: self.external_id(IdentificationScheme.Folder_uniqueId),
                         lambda self, v: self.set_external_id(IdentificationScheme.Folder_uniqueId, v))
    code_list = property(lambda self: self.codes(ClassificationScheme.Folder_codeList))
    last_update_time = property(lambda self: self.slot_value("lastUpdateTime"),
                                lambda self, v: self.set_slot("lastUpdateTime", v))
    title = property(lambda self: self.name.text)
    comments = property(lambda self: self.description.text)


@dataclass
class Association(RegistryObject):
    association_type: str = ""
    source_object: str = ""
    target_object: str = ""

    @property
    def type(self) -> AssociationType | None:
        try:
            return AssociationType(self.association_type)
        except ValueError:
            return None

    submission_set_status = property(lambda self: self.slot_value("SubmissionSetStatus"))


@dataclass
class Submission:
    """The content of one SubmitObjectsRequest, sorted by XDS kind.

    ``classifications`` / ``external_identifiers`` hold top-level ones that
    are not nested in their object (ebRIM allows both; the SubmissionSet
    marker Classification is usually top-level).  ``object_refs`` keeps
    ``rim:ObjectRef`` elements; ``unknown`` any other top-level object.
    """

    submission_set: SubmissionSet | None = None
    extra_submission_sets: list[SubmissionSet] = field(default_factory=list)
    document_entries: list[DocumentEntry] = field(default_factory=list)
    folders: list[Folder] = field(default_factory=list)
    associations: list[Association] = field(default_factory=list)
    classifications: list[Classification] = field(default_factory=list)
    external_identifiers: list[ExternalIdentifier] = field(default_factory=list)
    object_refs: list[ObjectRef] = field(default_factory=list)
    unknown_packages: list[RegistryPackage] = field(default_factory=list)
    #: Request-level slots of the SubmitObjectsRequest (rare).
    request_slots: list[Slot] = field(default_factory=list)

    def all_objects(self) -> list[RegistryObject]:
        out: list[RegistryObject] = []
        if self.submission_set:
            out.append(self.submission_set)
        out += self.extra_submission_sets + self.document_entries + self.folders + self.associations
        out += self.unknown_packages
        return out

    def by_id(self) -> dict[str, RegistryObject]:
        return {o.id: o for o in self.all_objects()}


def is_submission_set(package: RegistryObject) -> bool:
    return package.has_node(ClassificationNode.SUBMISSION_SET)


def is_folder(package: RegistryObject) -> bool:
    return package.has_node(ClassificationNode.FOLDER)
