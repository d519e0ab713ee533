"""Import retrieved instances into the hospital's own PACS, with import reconciliation.

IHE RAD TF-1 Import Reconciliation Workflow (IRWF.b): an object imported from outside the enterprise
gets the *local* patient identity before it reaches the local PACS.  For each instance:

- Patient ID (0010,0020), Issuer of Patient ID (0010,0021) and, if present or wanted, Issuer of Patient
  ID Qualifiers Sequence (0010,0024) become the importing hospital's local values (the caller decides
  them: :class:`LocalPatient`); Patient's Name (0010,0010) too when the caller gives one;
- the values replaced are kept, as DICOM PS3.3 C.12.1.1.9 (SOP Common Module, Original Attributes
  Sequence) prescribes: one new item of Original Attributes Sequence (0400,0561) holding Modified
  Attributes Sequence (0400,0550) (one item: the old values; an attribute that was absent is recorded
  with zero length), Attribute Modification DateTime (0400,0562), Modifying System (0400,0563) = the
  consumer's identity, Source of Previous Values (0400,0564) = who assigned the old values (the
  affinity domain / issuer), Reason for the Attribute Modification (0400,0565) = ``COERCE``;
- nothing else changes: UIDs, pixel data (never decoded; written back in the file's own Transfer
  Syntax), other attributes.

That item is also how this site's Imaging Document Source recognises a study it must not publish
again (it names the Modifying System: this consumer).

Two transports, both :class:`consumer.destinations.Destination`:

- :class:`DicomImport`: C-STORE (PS3.4 Annex B) on one reused association (:mod:`consumer.dicom_import`);
  ``has`` by C-FIND IMAGE level;
- :class:`DicomwebImport`: STOW-RS (PS3.18 10.5) ``POST {base}/studies`` with ``multipart/related;
  type="application/dicom"``, checking the response's Failed SOP Sequence (0008,1198) and Referenced
  SOP Sequence (0008,1199); ``has`` by QIDO-RS (PS3.18 10.6) ``/instances?SOPInstanceUID=``.

Domain code: reads no settings; the caller passes the PACS, the identity and the local patient.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import logging
import ssl
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import requests
from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence

from consumer.destinations import DestinationError, InstanceRef
from consumer.dicom_import import STORE_WARNINGS, DicomImportError, StoreRequestor, StoreScp, Timeouts
from consumer.part10 import Part10Error, UnsupportedLayout, read_layout
from xds_core.log_ref import log_ref
from xds_core.metadata.values import CX
from xds_core.tls import TlsAdapter

logger = logging.getLogger("consumer.pacs_import")

#: Reason for the Attribute Modification (0400,0565), PS3.3 C.12.1.1.9.2: values coerced on import.
REASON_COERCE = "COERCE"
#: Attributes this import coerces (PS3.3 C.7.1.1 Patient Module).
_PATIENT_ID_KEYWORDS = ("PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence")
#: LO (PS3.5 6.2): Modifying System and Source of Previous Values hold at most 64 characters.
_LO_MAX = 64


@dataclass(frozen=True)
class LocalPatient:
    """The importing hospital's identity of the patient (the caller maps the affinity patient to it)."""

    patient_id: str  # Patient ID (0010,0020)
    issuer_of_patient_id: str = ""  # Issuer of Patient ID (0010,0021)
    #: Issuer of Patient ID Qualifiers Sequence (0010,0024) > Universal Entity ID (0040,0032) / its Type
    #: (0040,0033), e.g. the hospital's assigning authority OID and "ISO"; empty: the sequence is removed.
    universal_entity_id: str = ""
    universal_entity_id_type: str = "ISO"
    #: Patient's Name (0010,0010) as DICOM PN (``Family^Given``); None keeps the imported name.
    patient_name: str | None = None


@dataclass(frozen=True)
class ImportReconciliation:
    """What an import coerces, and how it records it (PS3.3 C.12.1.1.9)."""

    local_patient: LocalPatient
    #: Modifying System (0400,0563): this site's consumer identity, e.g. ``XDSI_CONSUMER@HOSPITAL_B``.
    modifying_system: str
    #: Source of Previous Values (0400,0564): the affinity domain / issuer that assigned the old values.
    source_of_previous_values: str

    def __post_init__(self) -> None:
        if not self.local_patient.patient_id:
            raise ValueError("the local Patient ID is empty")
        for name in ("modifying_system", "source_of_previous_values"):
            value = getattr(self, name)
            if len(value) > _LO_MAX or "\\" in value:
                raise ValueError(f"{name} {value!r} is not a DICOM LO value (64 characters, no backslash)")
        if not self.modifying_system:
            raise ValueError("modifying_system (the consumer's identity) is empty")


def reconciliation_for(local_patient: str, affinity_patient: str, modifying_system: str,
                       local_issuer: str | None = None) -> ImportReconciliation:
    """Coercion to ``local_patient`` (CX ``id^^^&OID&ISO``) of objects of ``affinity_patient`` (CX).

    Issuer of Patient ID is ``local_issuer`` when given (the value the hospital's own objects carry),
    else the local assigning authority OID, which is also the Universal Entity ID of the qualifiers.
    """
    local, affinity = CX.from_str(local_patient), CX.from_str(affinity_patient)
    return ImportReconciliation(
        LocalPatient(local.id, issuer_of_patient_id=local.assigning_authority_oid if local_issuer is None
                     else local_issuer, universal_entity_id=local.assigning_authority_oid),
        modifying_system=modifying_system, source_of_previous_values=affinity.assigning_authority_oid[:_LO_MAX])


def reconcile(ds: Dataset, reconciliation: ImportReconciliation, *, now: dt.datetime | None = None) -> Dataset:
    """Coerce ``ds`` in place to the local patient and record the old values; returns ``ds``."""
    local = reconciliation.local_patient
    new: dict[str, Any] = {"PatientID": local.patient_id, "IssuerOfPatientID": local.issuer_of_patient_id or None}
    if local.universal_entity_id:
        qualifiers = Dataset()
        qualifiers.UniversalEntityID = local.universal_entity_id
        qualifiers.UniversalEntityIDType = local.universal_entity_id_type
        new["IssuerOfPatientIDQualifiersSequence"] = Sequence([qualifiers])
    else:
        new["IssuerOfPatientIDQualifiersSequence"] = None
    if local.patient_name is not None:
        new["PatientName"] = local.patient_name

    old = Dataset()
    for keyword, value in new.items():
        present = keyword in ds
        if not present and value is None:
            continue  # neither there nor wanted: nothing changes
        if present:
            old.add(copy.deepcopy(ds[keyword]))
        else:
            old.add_new(keyword, dictionary_VR(keyword), None)  # inserted: zero length
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)

    item = Dataset()
    item.ModifiedAttributesSequence = Sequence([old])
    stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    item.AttributeModificationDateTime = stamp.strftime("%Y%m%d%H%M%S.%f") + "+0000"
    item.ModifyingSystem = reconciliation.modifying_system
    item.SourceOfPreviousValues = reconciliation.source_of_previous_values
    item.ReasonForTheAttributeModification = REASON_COERCE
    if "OriginalAttributesSequence" in ds:  # earlier modifications stay; ours is appended
        ds.OriginalAttributesSequence.append(item)
    else:
        ds.OriginalAttributesSequence = Sequence([item])
    return ds


def read_reconciled(part10: Path | bytes, reconciliation: ImportReconciliation) -> Dataset:
    """Read a Part 10 object (a file or its bytes; pixel data as stored bytes: not decoded) and reconcile it."""
    name = part10.name if isinstance(part10, Path) else "the instance"
    try:
        ds = pydicom.dcmread(part10 if isinstance(part10, Path) else io.BytesIO(part10))
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for a bad file
        raise DestinationError(f"{name} is not a readable DICOM Part 10 file: {exc}") from exc
    if "TransferSyntaxUID" not in ds.file_meta:
        raise DestinationError(f"{name} has no Transfer Syntax UID in its File Meta Information")
    return reconcile(ds, reconciliation)


#: What an import reconciliation may change (PS3.3 C.12.1.1.9), as tags, and the one it reads besides.
_PATIENT_NAME, _PATIENT_ID, _ISSUER, _ISSUER_QUALIFIERS = 0x00100010, 0x00100020, 0x00100021, 0x00100024
_ORIGINAL_ATTRIBUTES = 0x04000561
_SPECIFIC_CHARACTER_SET = 0x00080005
_RECONCILED_GROUPS = (0x0010, 0x0400)


def reconciled_part10(source: Path | bytes, reconciliation: ImportReconciliation, ref: InstanceRef, *,
                      now: dt.datetime | None = None) -> bytes:
    """The Part 10 object ``source`` coerced to the local patient (:func:`reconcile`), as bytes.

    Only the patient-identity elements and the Original Attributes Sequence are decoded, changed and
    encoded again; every other element (pixel data included) is copied byte for byte from the original
    and the File Meta Information is kept: the splice costs a header walk, not a decode and re-encode of
    the whole dataset.  Deflated and big-endian objects go through pydicom whole.  The object must be
    the instance ``ref`` names (:class:`DestinationError` otherwise).
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        layout = read_layout(data)
    except UnsupportedLayout:
        ds = read_reconciled(data, reconciliation)
        _check_ref(ds, ref)
        return part10_bytes(ds)
    except Part10Error as exc:
        raise DestinationError(f"instance {ref.sop_instance_uid} is not a complete DICOM Part 10 object: "
                               f"{exc}") from exc
    if (layout.sop_instance_uid, layout.sop_class_uid) != (ref.sop_instance_uid, ref.sop_class_uid):
        raise DestinationError(f"the file is not instance {ref.sop_instance_uid} of SOP Class {ref.sop_class_uid}")
    touched = {_PATIENT_ID, _ISSUER, _ISSUER_QUALIFIERS, _ORIGINAL_ATTRIBUTES}
    if reconciliation.local_patient.patient_name is not None:
        touched.add(_PATIENT_NAME)
    # Retired group lengths (PS3.5 7.2) of the groups that change would be wrong afterwards: dropped.
    dropped = {group << 16 for group in _RECONCILED_GROUPS}
    read = [(tag, start, end) for tag, start, end in layout.elements
            if tag in touched or tag == _SPECIFIC_CHARACTER_SET]
    try:
        small = read_dataset(io.BytesIO(b"".join(data[start:end] for _, start, end in read)),
                             layout.implicit_vr, True)
        reconcile(small, reconciliation, now=now)
        encodings = convert_encodings(small.get("SpecificCharacterSet") or "ISO_IR 6")
        new: list[tuple[int, bytes]] = []
        for tag in sorted(t for t in touched if t in small):
            out = DicomBytesIO()
            out.is_little_endian, out.is_implicit_VR = True, layout.implicit_vr
            write_data_element(out, small[tag], encodings)
            new.append((tag, out.getvalue()))
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds for malformed values
        raise DestinationError(f"instance {ref.sop_instance_uid}: its patient attributes cannot be coerced: "
                               f"{type(exc).__name__}: {exc}") from exc
    pieces: list[bytes | memoryview] = [data[:layout.dataset_start]]
    view = memoryview(data)
    for tag, start, end in layout.elements:
        while new and new[0][0] < tag:
            pieces.append(new.pop(0)[1])
        if tag not in touched and tag not in dropped:
            pieces.append(view[start:end])
    pieces.extend(encoded for _, encoded in new)
    return b"".join(pieces)


def part10_bytes(ds: Dataset) -> bytes:
    """The dataset as a Part 10 file in the Transfer Syntax of its file meta (pixel data bytes as read)."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _check_ref(ds: Dataset, ref: InstanceRef) -> None:
    if str(ds.get("SOPInstanceUID", "")) != ref.sop_instance_uid or str(ds.get("SOPClassUID", "")) != ref.sop_class_uid:
        raise DestinationError(f"the file is not instance {ref.sop_instance_uid} of SOP Class {ref.sop_class_uid}")


# --- C-STORE ------------------------------------------------------------------------------------

class DicomImport:
    """Import by C-STORE into ``scp`` (one association for all the instances, TCP_NODELAY)."""

    def __init__(self, calling_ae_title: str, scp: StoreScp, reconciliation: ImportReconciliation, *,
                 timeouts: Timeouts | None = None) -> None:
        self.reconciliation = reconciliation
        self.requestor = StoreRequestor(calling_ae_title, scp, timeouts or Timeouts())
        self.stored = 0

    def has(self, ref: InstanceRef) -> bool:
        try:
            sop_class = self.requestor.find_sop_class(ref.study_instance_uid, ref.series_instance_uid,
                                                      ref.sop_instance_uid)
        except DicomImportError as exc:
            raise DestinationError(str(exc)) from exc
        return sop_class == ref.sop_class_uid

    def series_present(self, study_uid: str, series_uid: str) -> dict[str, str]:
        """{SOP Instance UID: SOP Class UID} of the series in the PACS: one C-FIND for a whole series."""
        try:
            return self.requestor.series_sop_classes(study_uid, series_uid)
        except DicomImportError as exc:
            raise DestinationError(str(exc)) from exc

    def put(self, ref: InstanceRef, part10: Path | bytes) -> None:
        ds = read_reconciled(part10, self.reconciliation)
        _check_ref(ds, ref)
        try:
            status = self.requestor.store(ds)
        except DicomImportError as exc:
            raise DestinationError(str(exc)) from exc
        if status != 0x0000 and status not in STORE_WARNINGS:
            raise DestinationError(f"C-STORE of {ref.sop_instance_uid} to {self.requestor.scp}: "
                                   f"status 0x{status:04X}")
        self.stored += 1
        logger.debug("import transport=c-store sop=%s status=0x%04X", log_ref(ref.sop_instance_uid), status)

    def close(self) -> None:
        self.requestor.close()
        if self.stored:  # one line per import (the instances at DEBUG)
            logger.info("import transport=c-store scp=%s stored=%d", self.requestor.scp, self.stored)


# --- STOW-RS ------------------------------------------------------------------------------------

#: PS3.18 F.2 DICOM JSON tags of the Store Instances Response Module (PS3.18 10.5.3.1).
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"
_FAILURE_REASON = "00081197"
_REFERENCED_SOP_INSTANCE_UID = "00081155"


def _json_value(item: dict[str, Any], tag: str) -> Any:
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else None


class DicomwebImport:
    """Import by STOW-RS into the DICOMweb service at ``base_url`` (e.g. ``http://pacs/dicom-web``).

    Instances are sent in batches (PS3.18 10.5: one multipart/related request stores many): :meth:`put`
    reconciles and queues an instance, a full batch goes out at once, and :meth:`flush` sends the rest and
    says which queued instances the origin server did not store (the retrieval calls it after each series
    and counts those as failed).  One request per instance would cost a round trip and an archive
    transaction each (measured: about half the time of a 500-instance import).
    """

    def __init__(self, base_url: str, reconciliation: ImportReconciliation, *,
                 session: requests.Session | None = None, timeout: float = 120.0,
                 tls: ssl.SSLContext | None = None,
                 boundary: Callable[[], str] = lambda: uuid.uuid4().hex,
                 batch_instances: int = 100, batch_bytes: int = 32 * 1024 * 1024) -> None:
        self.base = base_url.rstrip("/")
        self.reconciliation = reconciliation
        #: An ``https`` origin server is called with this client context (ITI-19: our certificate presented,
        #: the server's verified); the sessions made here mount it.
        self.tls = tls
        self.session = session or self._new_session()
        #: The sender thread's session: a caller's own session is used for it too (the caller then sees every
        #: request), otherwise one of its own, so that a query never shares a connection with a STOW in flight.
        self._given_session = session is not None
        self.timeout = timeout
        self._boundary = boundary
        self.batch_instances, self.batch_bytes = max(1, batch_instances), batch_bytes
        self._queue: list[tuple[InstanceRef, bytes]] = []
        self._queued_bytes = 0
        self._failed: dict[str, str] = {}
        self.stored = 0
        # One batch travels while the next is filled (the RAD-69 answer keeps streaming in meanwhile): a
        # single sender thread with its own HTTP session, at most one request in flight.
        self._sender: ThreadPoolExecutor | None = None
        self._in_flight: Future[None] | None = None
        self._send_session: requests.Session | None = None

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        if self.tls is not None:
            session.mount("https://", TlsAdapter(self.tls))
        return session

    def has(self, ref: InstanceRef) -> bool:
        return any(_json_value(row, "00080018") == ref.sop_instance_uid
                   and _json_value(row, "00080016") == ref.sop_class_uid
                   for row in self._instances({"StudyInstanceUID": ref.study_instance_uid,
                                               "SeriesInstanceUID": ref.series_instance_uid,
                                               "SOPInstanceUID": ref.sop_instance_uid}))

    def series_present(self, study_uid: str, series_uid: str) -> dict[str, str]:
        """{SOP Instance UID: SOP Class UID} of the series in the PACS: one QIDO-RS for a whole series."""
        rows = self._instances({"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid, "limit": "100000"})
        return {str(_json_value(row, "00080018")): str(_json_value(row, "00080016") or "")
                for row in rows if _json_value(row, "00080018") and _json_value(row, "0020000E") in (series_uid, None)}

    def _instances(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """QIDO-RS on the all-instances resource with the UIDs as matching keys (PS3.18 10.6.1.2): a 404 then
        means a wrong URL, never "unknown study" (servers differ on the latter for /studies/{uid}/... paths)."""
        url = f"{self.base}/instances"
        try:
            response = self.session.get(url, params=params, headers={"Accept": "application/dicom+json"},
                                        timeout=self.timeout)
        except requests.RequestException as exc:
            raise DestinationError(f"QIDO-RS {url}: {exc}") from exc
        if response.status_code == 204 or (response.status_code == 200 and not response.content.strip()):
            return []
        if response.status_code != 200:
            raise DestinationError(f"QIDO-RS {url}: HTTP {response.status_code}")
        try:
            rows = response.json()
        except ValueError:
            raise DestinationError(f"QIDO-RS {url}: the answer is not DICOM JSON") from None
        if not isinstance(rows, list):
            raise DestinationError(f"QIDO-RS {url}: the answer is not a list of instances")
        return [row for row in rows if isinstance(row, dict)]

    def put(self, ref: InstanceRef, part10: Path | bytes) -> None:
        """Reconcile and queue the instance (a full batch is sent at once); a failure to store it comes
        back from :meth:`flush`."""
        data = reconciled_part10(part10, self.reconciliation, ref)
        self._queue.append((ref, data))
        self._queued_bytes += len(data)
        if len(self._queue) >= self.batch_instances or self._queued_bytes >= self.batch_bytes:
            self._send()

    def flush(self) -> dict[str, str]:
        """Send what is queued and wait for it; {SOP Instance UID: why} of every instance queued since the
        last flush that was not stored."""
        if self._queue:
            self._send()
        self._wait()
        failed, self._failed = self._failed, {}
        return failed

    def _send(self) -> None:
        """Hand the queued batch to the sender (after the one in flight has been answered)."""
        batch, self._queue, self._queued_bytes = self._queue, [], 0
        self._wait()
        if self._sender is None:
            self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stow-rs")
            self._send_session = self.session if self._given_session else self._new_session()
        self._in_flight = self._sender.submit(self._post, batch)

    def _wait(self) -> None:
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()  # _post records failures itself; it does not raise

    def _post(self, batch: list[tuple[InstanceRef, bytes]]) -> None:
        session = self._send_session or self.session
        boundary = self._boundary()
        head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
        body = b"".join(head + data + b"\r\n" for _, data in batch) + f"--{boundary}--\r\n".encode("ascii")
        url = f"{self.base}/studies"
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                   "Accept": "application/dicom+json"}
        try:
            response = session.post(url, data=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            self._failed.update({ref.sop_instance_uid: f"STOW-RS {url}: {exc}" for ref, _ in batch})
            return
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, the batch is reported, not lost
            self._failed.update({ref.sop_instance_uid: f"STOW-RS {url}: {type(exc).__name__}" for ref, _ in batch})
            return
        stored = self._check(url, response, [ref for ref, _ in batch])
        self.stored += len(stored)
        logger.debug("import transport=stow-rs url=%s instances=%d stored=%d http=%d", url, len(batch), len(stored),
                     response.status_code)

    def _check(self, url: str, response: requests.Response, batch: list[InstanceRef]) -> set[str]:
        """PS3.18 10.5.3: 200 all stored; 202 some stored (warnings or failures); 409 none stored.  Records
        a reason for each instance of ``batch`` the answer does not list as stored; returns those stored."""
        try:
            answer = response.json() if response.content.strip() else {}
        except ValueError:
            answer = {}
        if isinstance(answer, list):
            answer = answer[0] if answer else {}
        if not isinstance(answer, dict):
            answer = {}
        reasons: dict[str, str] = {}
        for item in (answer.get(_FAILED_SOP_SEQUENCE) or {}).get("Value") or []:
            uid = _json_value(item, _REFERENCED_SOP_INSTANCE_UID)
            reason = _json_value(item, _FAILURE_REASON)
            text = f"STOW-RS {url}: HTTP {response.status_code}, {uid or 'an instance'} failed" + (
                f" (Failure Reason 0x{int(reason):04X})" if isinstance(reason, int | float) else "")
            if uid is None:
                reasons.update({ref.sop_instance_uid: text for ref in batch})
            else:
                reasons[str(uid)] = text
        stored = {str(_json_value(item, _REFERENCED_SOP_INSTANCE_UID))
                  for item in (answer.get(_REFERENCED_SOP_SEQUENCE) or {}).get("Value") or []}
        if response.status_code not in (200, 202):
            stored = set()
        for ref in batch:
            uid = ref.sop_instance_uid
            if uid in reasons or uid not in stored:
                self._failed[uid] = reasons.get(uid) or (
                    f"STOW-RS {url}: HTTP {response.status_code}" if response.status_code not in (200, 202)
                    else f"STOW-RS {url}: HTTP {response.status_code} but {uid} is not in the Referenced SOP "
                         "Sequence")
        return {ref.sop_instance_uid for ref in batch} - set(self._failed)

    def close(self) -> None:
        if self._queue:  # a caller that never flushed: store what is queued rather than drop it
            self._send()
        self._wait()
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None
        if self._send_session is not None and self._send_session is not self.session:
            self._send_session.close()
        self.session.close()
        if self.stored:
            logger.info("import transport=stow-rs url=%s stored=%d", self.base, self.stored)
