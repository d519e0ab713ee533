"""ebRIM registry objects as XDS sees them.

Design: every object keeps the *generic* ebRIM content it arrived with (slots,
classifications, external identifiers, names, unknown attributes) so that a
parse -> serialize round trip is faithful, and offers *typed* accessors for
the XDS attributes on top (``entry.patient_id``, ``entry.class_code``...).
The accessors read and write the generic content, so there is one source of
truth per attribute.

Builders (``DocumentEntry.build``, ``SubmissionSet.build``, ``Folder.build``,
``Association.build`` / ``Association.has_member``) make complete objects from
typed values, with fresh ``urn:uuid:`` ids and every nested Classification /
ExternalIdentifier pointing at its parent; they check nothing
(:mod:`xds_registry.validation` does).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, fields

from xds_core.metadata.values import Author, Code, Slot
from xds_core.vocabulary import (
    REFERENCE_ID_LIST_SLOT,
    AssociationType,
    ClassificationNode,
    ClassificationScheme,
    IdentificationScheme,
    ObjectType,
    SubmissionSetStatus,
)


def new_id() -> str:
    """A fresh entryUUID (``urn:uuid:`` + random UUID), as ebRIM 3.0 ids are written."""
    return f"urn:uuid:{uuid.uuid4()}"


@dataclass
class OpaqueElement:
    """An XML element we do not model, kept verbatim (serialized bytes) for a faithful round trip.

    The model stays free of lxml; :mod:`xds_core.ebxml.serialize` re-inserts it.
    """

    tag: str  #: Clark name, e.g. ``{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}ContentVersionInfo``
    xml: bytes


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
    #: Child elements we do not model (e.g. ``ContentVersionInfo``, a package's ``RegistryObjectList``),
    #: re-emitted after the modelled children (where ebRIM 3.0 puts every type extension).
    extra_elements: list[OpaqueElement] = field(default_factory=list)

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
    #: ``rim:VersionInfo/@comment``.
    version_comment: str | None = None
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

    def set_authors(self, scheme: str, authors: Iterable[Author]) -> None:
        self.classifications = [c for c in self.classifications if c.classification_scheme != scheme]
        for author in authors:
            self.classifications.append(Classification.for_author(scheme, self.id, author))

    def _set_texts(self, title: str | None, comments: str | None) -> None:
        if title is not None:
            self.name = InternationalString.of(title)
        if comments is not None:
            self.description = InternationalString.of(comments)

    # --- external identifiers -----------------------------------------------
    def external_id(self, scheme: str) -> str | None:
        return next((e.value for e in self.external_identifiers if e.identification_scheme == scheme), None)

    def set_external_id(self, scheme: IdentificationScheme, value: str) -> None:
        from xds_core.vocabulary import IDENTIFICATION_SCHEME_NAMES

        for ext in self.external_identifiers:
            if ext.identification_scheme == scheme:
                ext.value = value
                return
        self.external_identifiers.append(ExternalIdentifier(
            id=new_id(), identification_scheme=scheme, value=value, registry_object=self.id,
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
        return cls(id=new_id(), classification_scheme=scheme, classified_object=classified_object,
                   node_representation=code.code, slots=[Slot("codingScheme", [code.scheme])],
                   name=InternationalString.of(code.display_name))

    @classmethod
    def for_author(cls, scheme: str, classified_object: str, author: Author) -> Classification:
        """An author Classification: empty nodeRepresentation, the author in slots (ITI TF-3 4.2.3.1.4)."""
        return cls(id=new_id(), classification_scheme=scheme, classified_object=classified_object,
                   node_representation="", slots=author.to_slots())

    @classmethod
    def marker(cls, node: str, classified_object: str) -> Classification:
        """The Classification that types a RegistryPackage as SubmissionSet or Folder (ITI TF-3 4.2.3.3.1)."""
        return cls(id=new_id(), classified_object=classified_object, classification_node=node)


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

    @classmethod
    def build(
        cls,
        *,
        patient_id: str,
        unique_id: str,
        mime_type: str,
        id: str | None = None,
        object_type: str = ObjectType.STABLE_DOCUMENT_ENTRY,
        class_code: Code | None = None,
        type_code: Code | None = None,
        format_code: Code | None = None,
        healthcare_facility_type_code: Code | None = None,
        practice_setting_code: Code | None = None,
        confidentiality_codes: Iterable[Code] = (),
        event_codes: Iterable[Code] = (),
        authors: Iterable[Author] = (),
        creation_time: str | None = None,
        service_start_time: str | None = None,
        service_stop_time: str | None = None,
        language_code: str | None = None,
        source_patient_id: str | None = None,
        source_patient_info: Iterable[str] = (),
        legal_authenticator: str | None = None,
        reference_ids: Iterable[str] = (),
        hash: str | None = None,
        size: int | str | None = None,
        repository_unique_id: str | None = None,
        title: str | None = None,
        comments: str | None = None,
        extra_slots: Iterable[Slot] = (),
    ) -> DocumentEntry:
        """A DocumentEntry from typed values (ITI TF-3 Table 4.2.3.2-1 names).

        ``id`` defaults to a fresh ``urn:uuid:``; every nested Classification /
        ExternalIdentifier gets its own UUID and points at ``id``.  Nothing is
        checked here: :mod:`xds_registry.validation` does that.  ``reference_ids``
        are CXi strings (``id^^^&OID&ISO^type``).
        """
        entry = cls(id=id or new_id(), object_type=object_type, mime_type=mime_type)
        for name, value in (("creationTime", creation_time), ("hash", hash), ("languageCode", language_code),
                            ("legalAuthenticator", legal_authenticator),
                            ("repositoryUniqueId", repository_unique_id),
                            ("serviceStartTime", service_start_time), ("serviceStopTime", service_stop_time),
                            ("size", None if size is None else str(size)),
                            ("sourcePatientId", source_patient_id)):
            if value is not None:
                entry.slots.append(Slot(name, [value]))
        if source_patient_info:
            entry.slots.append(Slot("sourcePatientInfo", list(source_patient_info)))
        if reference_ids:
            entry.slots.append(Slot(REFERENCE_ID_LIST_SLOT, list(reference_ids)))
        entry.slots += list(extra_slots)
        entry._set_texts(title, comments)
        entry.set_authors(ClassificationScheme.DocumentEntry_author, authors)
        for scheme, code in ((ClassificationScheme.DocumentEntry_classCode, class_code),
                             (ClassificationScheme.DocumentEntry_formatCode, format_code),
                             (ClassificationScheme.DocumentEntry_healthcareFacilityTypeCode,
                              healthcare_facility_type_code),
                             (ClassificationScheme.DocumentEntry_practiceSettingCode, practice_setting_code),
                             (ClassificationScheme.DocumentEntry_typeCode, type_code)):
            if code is not None:
                entry.set_codes(scheme, [code])
        entry.set_codes(ClassificationScheme.DocumentEntry_confidentialityCode, list(confidentiality_codes))
        entry.set_codes(ClassificationScheme.DocumentEntry_eventCodeList, list(event_codes))
        entry.patient_id = patient_id
        entry.unique_id = unique_id
        return entry



@dataclass
class RegistryPackage(RegistryObject):
    """``rim:RegistryPackage``: a SubmissionSet or a Folder, told apart by classification node."""

    def as_kind(self) -> RegistryPackage:
        """This package re-typed by its marker Classification: SubmissionSet, Folder, or itself.

        A package carrying both markers is a SubmissionSet (validation reports the conflict).
        """
        if type(self) is not RegistryPackage:
            return self
        kind: type[RegistryPackage] | None = (
            SubmissionSet if is_submission_set(self) else Folder if is_folder(self) else None)
        if kind is None:
            return self
        return kind(**{f.name: getattr(self, f.name) for f in fields(self)})


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

    @classmethod
    def build(
        cls,
        *,
        patient_id: str,
        unique_id: str,
        source_id: str,
        submission_time: str,
        content_type_code: Code | None = None,
        id: str | None = None,
        authors: Iterable[Author] = (),
        intended_recipients: Iterable[str] = (),
        title: str | None = None,
        comments: str | None = None,
        extra_slots: Iterable[Slot] = (),
    ) -> SubmissionSet:
        """A SubmissionSet with its marker Classification (ITI TF-3 4.2.3.3); ids as in DocumentEntry.build."""
        package = cls(id=id or new_id(), object_type=ObjectType.REGISTRY_PACKAGE)
        package.slots.append(Slot("submissionTime", [submission_time]))
        if intended_recipients:
            package.slots.append(Slot("intendedRecipient", list(intended_recipients)))
        package.slots += list(extra_slots)
        package._set_texts(title, comments)
        package.classifications.append(Classification.marker(ClassificationNode.SUBMISSION_SET, package.id))
        package.set_authors(ClassificationScheme.SubmissionSet_author, authors)
        if content_type_code is not None:
            package.set_codes(ClassificationScheme.SubmissionSet_contentTypeCode, [content_type_code])
        package.unique_id = unique_id
        package.source_id = source_id
        package.patient_id = patient_id
        return package



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

    @classmethod
    def build(
        cls,
        *,
        patient_id: str,
        unique_id: str,
        code_list: Iterable[Code] = (),
        id: str | None = None,
        title: str | None = None,
        comments: str | None = None,
        last_update_time: str | None = None,
        extra_slots: Iterable[Slot] = (),
    ) -> Folder:
        """A Folder with its marker Classification (ITI TF-3 4.2.3.4); ids as in DocumentEntry.build."""
        package = cls(id=id or new_id(), object_type=ObjectType.REGISTRY_PACKAGE)
        if last_update_time is not None:
            package.slots.append(Slot("lastUpdateTime", [last_update_time]))
        package.slots += list(extra_slots)
        package._set_texts(title, comments)
        package.classifications.append(Classification.marker(ClassificationNode.FOLDER, package.id))
        package.set_codes(ClassificationScheme.Folder_codeList, list(code_list))
        package.patient_id = patient_id
        package.unique_id = unique_id
        return package



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

    @classmethod
    def build(cls, association_type: str, source_object: str, target_object: str, *,
              id: str | None = None, slots: Iterable[Slot] = ()) -> Association:
        """Any Association (ITI TF-3 4.2.2); ``id`` defaults to a fresh ``urn:uuid:``."""
        return cls(id=id or new_id(), object_type=ObjectType.ASSOCIATION, association_type=association_type,
                   source_object=source_object, target_object=target_object, slots=list(slots))

    @classmethod
    def has_member(cls, source_object: str, target_object: str, *,
                   submission_set_status: str | None = SubmissionSetStatus.ORIGINAL,
                   id: str | None = None) -> Association:
        """A HasMember association; SS->DocumentEntry ones carry ``SubmissionSetStatus`` (ITI TF-3 4.2.2.1).

        Pass ``submission_set_status=None`` for SS->Folder, Folder->DE and SS->Association members.
        """
        slots = [Slot("SubmissionSetStatus", [submission_set_status])] if submission_set_status else []
        return cls.build(AssociationType.HasMember, source_object, target_object, id=id, slots=slots)


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
    #: Top-level objects of kinds XDS does not use (``rim:ExternalLink``, ``rim:Organization``...), verbatim.
    unknown_objects: list[OpaqueElement] = field(default_factory=list)
    #: Request-level slots of the SubmitObjectsRequest (rare).
    request_slots: list[Slot] = field(default_factory=list)
    #: ``SubmitObjectsRequest`` attributes (``id``, ``comment``, others) by Clark name.
    request_attributes: dict[str, str] = field(default_factory=dict)

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
