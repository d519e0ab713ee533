"""Document Registry persistence: typed tables, one indexed column per stored-query parameter.

Design: one table per XDS object kind
(:class:`DocumentEntry`, :class:`SubmissionSet`, :class:`Folder`, :class:`Association`) whose
columns serve the WHERE clause of the stored queries, one table of multi-valued attributes
(:class:`RegistryCode`) for the IN / AND-repeat parameters, and the canonical ebRIM XML of each
object (column ``xml``) that serves the answer: a LeafClass response is the concatenation of the
stored fragments, never a rebuild from rows.

Rows are written only by the registry transactions (:mod:`xds_registry.register_document_set`,
:mod:`xds_registry.patient_identity_feed`); admin shows them read-only.

Value encodings (the stored-query code relies on these)
--------------------------------------------------------
``entry_uuid``
    The object's ``@id`` as stored: always ``urn:uuid:<uuid>`` -- a client-assigned urn:uuid is kept
    exactly as submitted, symbolic ids are replaced by registry-assigned (lowercase) UUIDs before
    anything is stored (ITI TF-3 4.2.3.1.5).  Unique per table (constraint ``*_entry_uuid_uniq``).
``lid``
    ``@lid`` (logical id); equals ``entry_uuid`` for version 1 (ITI-42 never carries another).
``version_name``
    ``rim:VersionInfo/@versionName``; the registry assigns ``"1"``.
``status``
    Full availabilityStatus URI (:class:`~xds_core.vocabulary.AvailabilityStatus` value,
    e.g. ``urn:oasis:names:tc:ebxml-regrep:StatusType:Approved``) -- compare with the enum values.
``patient_id``
    The CX string exactly as submitted, ``id^^^&OID&ISO`` (it is also :attr:`Patient.patient_id`).
    After an ITI-8 merge (A40) the rows of the merged-away id are re-pointed to the surviving id
    (column *and* stored XML), so a query by the surviving id finds all of them (ITI TF-2a 3.8.4.1.3).
``unique_id``
    The uniqueId external identifier value.  Unique for SubmissionSet and Folder (DB constraint);
    for DocumentEntry indexed but NOT unique: an identical re-registration (same hash and size) is
    allowed by ITI TF-3 4.2.3.2.26, so several entries can share a uniqueId.
Times (``creation_time``, ``service_start_time``, ``service_stop_time``, ``submission_time``,
``last_update_time``)
    DTM padded to exactly 14 digits ``YYYYMMDDhhmmss`` with the earliest instant
    (``2004`` -> ``20040101000000``, :meth:`xds_core.metadata.values.DTM.lower_bound`), so that
    string comparison is chronological on every database.  ``NULL`` when the slot is absent.  The
    original precision survives in the stored XML.
Single-valued codes (``class_code``, ``type_code``, ``format_code``, ``practice_setting_code``,
``healthcare_facility_type_code``, SubmissionSet ``content_type_code``)
    ``"code^^scheme"`` -- exactly the stored-query parameter form (ITI TF-2a 3.18.4.1.2.3.7), e.g.
    ``"34133-9^^2.16.840.1.113883.6.1"``.  The display name lives only in the XML.
``hash``
    SHA-1, lowercase hex.  ``size``: bytes (bigint).
``document_availability``
    Full URI (:class:`~xds_core.vocabulary.DocumentAvailability`), default Online.
``object_type``
    Stable / On-Demand DocumentEntry objectType UUID (:class:`~xds_core.vocabulary.ObjectType`).

Multi-valued attributes: :class:`RegistryCode`
    One row per value: ``(object_kind, object_id, attribute, value)`` where ``object_kind`` is a
    :class:`ObjectKind` (``DE``/``SS``/``FD``), ``object_id`` the *primary key* (bigint ``id``) of
    the row in that kind's table (no FK constraint: one table serves three kinds; join with
    ``object_kind=... AND object_id=<table>.id``), ``attribute`` a :class:`CodeAttribute`:

    ============================  =====  ==================================================
    attribute                     kind   value
    ============================  =====  ==================================================
    ``classCode``                 DE     ``code^^scheme`` (also in column ``class_code``)
    ``confidentialityCode``       DE     ``code^^scheme`` (one row per code)
    ``eventCodeList``             DE     ``code^^scheme``
    ``referenceIdList``           DE     the CXi value as submitted (``id^^^&OID&ISO^type``)
    ``authorPerson``              DE/SS  the XCN string as submitted (one row per author)
    ``codeList``                  FD     ``code^^scheme``
    ============================  =====  ==================================================

    classCode is duplicated here so that "classCode IN (...)" can use either path.

Stored XML (``xml`` column)
    The object serialized by :func:`xds_core.ebxml.serialize.registry_object` at registration
    time (UTF-8 text, standalone element with its own namespace declarations), after the
    registry assigned ids, ``lid``, ``status=Approved``, ``VersionInfo`` and (Folder)
    ``lastUpdateTime``.  Registry-owned values are KEPT CURRENT in the fragment: when the registry
    changes one (deprecation by RPLC/XFRM_RPLC, a folder's lastUpdateTime, a patient merge) it
    rewrites the fragment in the same transaction (:mod:`xds_registry.stored_xml`), so the
    fragment is always exactly what a LeafClass answer returns -- except ``@home``
    (homeCommunityId), which the query layer adds on output because it is a deployment setting.
    Unknown/extra slots are kept in the fragment (never dropped: no XDSExtraMetadataNotSaved).

Indexes
    Plain btree indexes declared in ``Meta`` (no ``varchar_pattern_ops`` twins): ``lid``,
    ``unique_id``, each single-valued code column, ``object_type``, ``repository_unique_id``,
    ``source_id``, ``content_type_code``; composites for the patient-scoped queries
    (``patient_id, status, <time>``, ``patient_id, class_code``, ...); association ends with their
    type; the code table by ``(attribute, value, object_kind, object_id)`` and by object.  On
    PostgreSQL the code table also has ``CREATE STATISTICS (dependencies, mcv)`` on
    ``(object_kind, attribute, value)`` (migration 0001).  ``status`` alone is not indexed (always
    combined with patient_id; nearly all rows are Approved).

Associations
    :class:`Association` rows carry ``source_uuid`` / ``target_uuid`` (entryUUIDs; the target of a
    document relationship may be an entry of an earlier submission) and ``source_kind`` /
    ``target_kind`` (:class:`ObjectKind`, ``AS`` when an end is an association -- the
    SS->(Folder->DE) HasMember -- or ``""`` when unknown), ``association_type`` (full URI),
    ``submission_set_status`` (HasMember slot, ``Original``/``Reference`` or ``""``) and the
    ``patient_id`` of the source object.
"""

from __future__ import annotations

from django.db import models

from xds_core.vocabulary import AvailabilityStatus, DocumentAvailability


class ObjectKind(models.TextChoices):
    DOCUMENT_ENTRY = "DE", "DocumentEntry"
    SUBMISSION_SET = "SS", "SubmissionSet"
    FOLDER = "FD", "Folder"
    ASSOCIATION = "AS", "Association"


class CodeAttribute(models.TextChoices):
    """Names of the multi-valued attributes kept in :class:`RegistryCode`."""

    CLASS_CODE = "classCode"
    CONFIDENTIALITY_CODE = "confidentialityCode"
    EVENT_CODE_LIST = "eventCodeList"
    REFERENCE_ID_LIST = "referenceIdList"
    AUTHOR_PERSON = "authorPerson"
    CODE_LIST = "codeList"


STATUS_CHOICES = [(s.value, s.name.title()) for s in AvailabilityStatus]


class Patient(models.Model):
    """A patient known to the affinity domain (fed by ITI-8 or ``manage.py xds_patient``).

    ``merged_into`` set means the id was merged away (A40): it is then unknown for new
    submissions (XDSUnknownPatientId), and its metadata has been re-pointed to the survivor.
    """

    patient_id = models.CharField(max_length=256, unique=True, help_text="CX id^^^&OID&ISO")
    assigning_authority = models.CharField(max_length=64, db_index=True, help_text="OID of CX.4")
    merged_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="merged_ids")
    family_name = models.CharField(max_length=128, blank=True)
    given_name = models.CharField(max_length=128, blank=True)
    birth_date = models.CharField(max_length=16, blank=True, help_text="PID-7 as received")
    sex = models.CharField(max_length=8, blank=True)
    address = models.CharField(max_length=256, blank=True)
    pid_segment = models.TextField(blank=True, help_text="last PID segment received, for reference")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["patient_id"]

    def __str__(self) -> str:
        return self.patient_id


class RegistryObjectRow(models.Model):
    """Columns shared by the four registry object tables.

    Indexes are declared in each model's ``Meta`` (plain btree), not with ``db_index``/``unique``
    on the fields: on PostgreSQL those add a second ``varchar_pattern_ops`` index per column,
    which no stored query uses and which doubled the index writes of every registration.
    """

    entry_uuid = models.CharField(max_length=64)
    lid = models.CharField(max_length=64)
    version_name = models.CharField(max_length=16, default="1")
    # No index of its own: status is always queried with patient_id (composite indexes below) and
    # is Approved for nearly every row, so a single-column index would only slow inserts down.
    status = models.CharField(max_length=64, choices=STATUS_CHOICES, default=AvailabilityStatus.APPROVED.value)
    xml = models.TextField(help_text="canonical rim XML fragment returned by LeafClass queries")
    registered = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.entry_uuid


class DocumentEntry(RegistryObjectRow):
    """XDSDocumentEntry (rim:ExtrinsicObject, ITI TF-3 4.2.3.2)."""

    unique_id = models.CharField(max_length=128)
    patient_id = models.CharField(max_length=256)
    object_type = models.CharField(max_length=64)
    creation_time = models.CharField(max_length=14, null=True, blank=True)
    service_start_time = models.CharField(max_length=14, null=True, blank=True)
    service_stop_time = models.CharField(max_length=14, null=True, blank=True)
    class_code = models.CharField(max_length=256)
    type_code = models.CharField(max_length=256)
    format_code = models.CharField(max_length=256)
    practice_setting_code = models.CharField(max_length=256)
    healthcare_facility_type_code = models.CharField(max_length=256)
    mime_type = models.CharField(max_length=128)
    repository_unique_id = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=40, blank=True)
    size = models.BigIntegerField(null=True, blank=True)
    document_availability = models.CharField(max_length=64, default=DocumentAvailability.ONLINE.value)
    title = models.CharField(max_length=256, blank=True)

    class Meta:
        verbose_name = "document entry"
        verbose_name_plural = "document entries"
        constraints = [models.UniqueConstraint(fields=["entry_uuid"], name="de_entry_uuid_uniq")]
        indexes = [
            models.Index(fields=["lid"], name="de_lid"),
            models.Index(fields=["unique_id"], name="de_unique_id"),
            models.Index(fields=["object_type"], name="de_object_type"),
            models.Index(fields=["class_code"], name="de_class_code"),
            models.Index(fields=["type_code"], name="de_type_code"),
            models.Index(fields=["format_code"], name="de_format_code"),
            models.Index(fields=["practice_setting_code"], name="de_practice_setting_cod"),
            models.Index(fields=["healthcare_facility_type_code"], name="de_healthcare_facility_"),
            models.Index(fields=["repository_unique_id"], name="de_repository_unique_id"),
            # FindDocuments shape: patient + status (+ creationTime range / classCode).
            models.Index(fields=["patient_id", "status", "creation_time"], name="de_pat_status_ctime"),
            models.Index(fields=["patient_id", "class_code"], name="de_pat_class"),
            models.Index(fields=["patient_id", "service_start_time"], name="de_pat_sstart"),
            models.Index(fields=["patient_id", "service_stop_time"], name="de_pat_sstop"),
        ]


class SubmissionSet(RegistryObjectRow):
    """XDSSubmissionSet (rim:RegistryPackage, ITI TF-3 4.2.3.3)."""

    unique_id = models.CharField(max_length=128)
    patient_id = models.CharField(max_length=256)
    source_id = models.CharField(max_length=64)
    submission_time = models.CharField(max_length=14, null=True, blank=True)
    content_type_code = models.CharField(max_length=256, blank=True)
    title = models.CharField(max_length=256, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["entry_uuid"], name="ss_entry_uuid_uniq"),
                       models.UniqueConstraint(fields=["unique_id"], name="ss_unique_id_uniq")]
        indexes = [
            models.Index(fields=["lid"], name="ss_lid"),
            models.Index(fields=["source_id"], name="ss_source_id"),
            models.Index(fields=["content_type_code"], name="ss_content_type_code"),
            models.Index(fields=["patient_id", "status", "submission_time"], name="ss_pat_status_stime"),
        ]


class Folder(RegistryObjectRow):
    """XDSFolder (rim:RegistryPackage, ITI TF-3 4.2.3.4)."""

    unique_id = models.CharField(max_length=128)
    patient_id = models.CharField(max_length=256)
    last_update_time = models.CharField(max_length=14, null=True, blank=True)
    title = models.CharField(max_length=256, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["entry_uuid"], name="fd_entry_uuid_uniq"),
                       models.UniqueConstraint(fields=["unique_id"], name="fd_unique_id_uniq")]
        indexes = [
            models.Index(fields=["lid"], name="fd_lid"),
            models.Index(fields=["patient_id", "status", "last_update_time"], name="fd_pat_status_lut"),
        ]


class Association(RegistryObjectRow):
    """rim:Association (HasMember and the document relationships, ITI TF-3 4.2.2)."""

    association_type = models.CharField(max_length=128)
    source_uuid = models.CharField(max_length=64)  # indexed by (source_uuid, association_type)
    target_uuid = models.CharField(max_length=64)  # indexed by (target_uuid, association_type)
    source_kind = models.CharField(max_length=2, choices=ObjectKind.choices, blank=True)
    target_kind = models.CharField(max_length=2, choices=ObjectKind.choices, blank=True)
    submission_set_status = models.CharField(max_length=16, blank=True)
    patient_id = models.CharField(max_length=256, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["entry_uuid"], name="as_entry_uuid_uniq")]
        indexes = [
            models.Index(fields=["patient_id"], name="as_patient_id"),
            models.Index(fields=["source_uuid", "association_type"], name="as_source_type"),
            models.Index(fields=["target_uuid", "association_type"], name="as_target_type"),
        ]


class RegistryCode(models.Model):
    """One value of a multi-valued queryable attribute (see the module docstring)."""

    object_kind = models.CharField(max_length=2, choices=ObjectKind.choices)
    object_id = models.BigIntegerField(help_text="primary key of the row in the object_kind's table")
    attribute = models.CharField(max_length=32, choices=CodeAttribute.choices)
    value = models.CharField(max_length=512)

    class Meta:
        indexes = [
            models.Index(fields=["attribute", "value", "object_kind", "object_id"], name="code_attr_value"),
            models.Index(fields=["object_kind", "object_id"], name="code_object"),
        ]

    def __str__(self) -> str:
        return f"{self.object_kind}#{self.object_id} {self.attribute}={self.value}"
