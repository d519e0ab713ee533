"""RAD-55 WADO Retrieve (WADO-URI, DICOM PS3.18 2014b §6.2 / §8) of one instance, ``application/dicom`` only.

XDS-I.b gives consumers two ways to the images an Imaging Document Source's KOS references:
RAD-69 and RAD-55 (RAD TF-3 4.55; the NIST IDS tests ids_4805..ids_4809 use both).  The same PACS
fetch as RAD-69 (:mod:`imaging_source.dicom.fetch`) delivers the instance; transcoding as RAD-69.

Answers (PS3.18 §8.1 / RFC 7231): 200 + the Part 10 object; 400 for a request that is not WADO, or
whose studyUID/seriesUID/objectUID/transferSyntax is given but is not a DICOM UID (PS3.5 §9.1; a
malformed request, PS3.18 §8.5.3 / RFC 7231 §6.5.1 - refused by the access gate,
:mod:`imaging_source.access`, before any PACS call); 404 when studyUID/seriesUID/objectUID do not
name one instance of this source (also when one is empty - the NIST test ids_4809 case 4 expects
404 there); 406 for a contentType other than ``application/dicom`` or a transferSyntax we cannot
produce; 502 when the PACS cannot be reached; 504 when it does not answer in time
(:class:`~imaging_source.dicom.instances.PacsDeadlines`: no first byte within
XDS_PACS_FIRST_BYTE_TIMEOUT, or silent for XDS_PACS_IDLE_TIMEOUT within its answer - RFC 9110
§15.6.5, a gateway that did not get a timely answer from its upstream server).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian

from imaging_source.access import check_instance, check_transfer_syntaxes, describe
from imaging_source.dicom.auditing import patient_id_of_part10
from imaging_source.dicom.config import DicomConfig
from imaging_source.dicom.fetch import FetchStream
from imaging_source.dicom.instances import DEFAULT_DEADLINES, FetchError, PacsDeadlines, PacsTimeout, SeriesFetch
from imaging_source.dicom.transcode import TranscodeError, choose_target, known_transfer_syntax, transcode
from xds_core import audit
from xds_core.log_ref import redact
from xds_core.vocabulary import DICOM_MIME_TYPE

logger = logging.getLogger("imaging_source.rad55")


@dataclass(frozen=True)
class WadoAnswer:
    status: int
    content_type: str
    body: bytes


def _text(status: int, reason: str) -> WadoAnswer:
    return WadoAnswer(status, "text/plain; charset=utf-8", reason.encode())


def wado_retrieve(params: dict[str, str], dicom: DicomConfig,
                  deadlines: PacsDeadlines = DEFAULT_DEADLINES) -> WadoAnswer:
    """One WADO-URI request (query parameters as a flat dict) -> the HTTP answer."""
    started = time.perf_counter()
    answer = _retrieve(params, dicom, deadlines)
    # No UID in the log line: a SOP Instance UID names one patient's image (no patient data in logs).
    logger.info("rad55 status=%d bytes=%d ms=%.1f", answer.status,
                len(answer.body) if answer.status == 200 else 0, (time.perf_counter() - started) * 1000)
    return answer


def _retrieve(params: dict[str, str], dicom: DicomConfig, deadlines: PacsDeadlines) -> WadoAnswer:
    if params.get("requestType", "").strip() != "WADO":  # PS3.18 §8.1.1: requestType=WADO is required
        return _text(400, "requestType must be WADO")
    content_types = [c.split(";")[0].strip() for c in params.get("contentType", "").split(",") if c.strip()]
    # PS3.18 §8.1.5: the default for image objects is image/jpeg, which this source does not render.
    if DICOM_MIME_TYPE not in content_types:
        return _text(406, "only contentType=application/dicom is served")
    raw = [params.get(k, "") for k in ("studyUID", "seriesUID", "objectUID")]
    if not all(value.strip() for value in raw):
        # Empty names no instance: 404 (NIST ids_4809 case 4).
        return _text(404, "studyUID, seriesUID and objectUID must all be given")
    # The access gate (PS3.5 §9.1), before any PACS call: a value that is not a DICOM UID makes the
    # request malformed - 400 Bad Request (PS3.18 §8.5.3; RFC 7231 §6.5.1), every finding named.
    checked = check_instance(*raw)
    syntax_given = params.get("transferSyntax", "")
    syntaxes = check_transfer_syntaxes([syntax_given] if syntax_given.strip() else [])
    findings = [*(checked if isinstance(checked, list) else ()), *syntaxes.findings]
    if findings or isinstance(checked, list):
        return _text(400, describe(findings))
    study, series, sop = checked.study_uid, checked.series_uid, checked.sop_uid
    # PS3.18 §8.2.11: transferSyntax applies to application/dicom; default Explicit VR Little Endian.
    syntax = syntaxes.uids[0] if syntaxes.uids else ExplicitVRLittleEndian
    if not known_transfer_syntax(syntax):
        return _text(406, f"transfer syntax {syntax} is not supported")
    stream = FetchStream(dicom, [SeriesFetch(study, series, [sop])], accept_transfer_syntaxes=[syntax],
                         deadlines=deadlines)
    try:
        delivered = list(stream)
    except PacsTimeout as exc:
        logger.warning("rad55 fetch failed: %s", redact(exc))
        return _text(504, "the PACS did not answer in time")
    except (FetchError, ConnectionError, OSError) as exc:
        logger.warning("rad55 fetch failed: %s", redact(exc))
        return _text(502, "the PACS could not be reached")
    if not delivered:
        # Not in that study/series (the collector checks both) or unknown: no such object.
        return _text(404, f"no instance {sop} in series {series} of study {study}")
    [(_key, instance)] = delivered
    target = choose_target(instance.transfer_syntax_uid, [syntax])
    if target is None:
        instance.discard()
        return _text(406, f"instance {sop} cannot be provided in {syntax}")
    try:
        data = instance.read_bytes() if target == instance.transfer_syntax_uid else transcode(
            instance.read_bytes(), target)
    except TranscodeError as exc:
        return _text(406, f"instance {sop} cannot be provided in {syntax}: {exc}")
    finally:
        instance.discard()
    return WadoAnswer(200, DICOM_MIME_TYPE, data)


def audit_event(params: dict[str, str], answer: WadoAnswer, requestor_address: str, url: str) -> audit.AuditEvent:
    """RAD-55's audit record at the Imaging Document Source (RAD TF-3 4.55 with RAD TF-3 5.1: DICOM
    Instances Transferred, PS3.15 A.5.3.7): the instance sent (or asked for), its study and patient."""
    study, sop = params.get("studyUID", "").strip(), params.get("objectUID", "").strip()
    sent = answer.status == 200
    outcome = (audit.EventOutcome.SUCCESS if sent else
               audit.EventOutcome.MAJOR_FAILURE if answer.status >= 500 else audit.EventOutcome.SERIOUS_FAILURE)
    return audit.transaction_event(
        audit.Transaction.RAD_55, audit.Side.RESPONDER,
        requestor=audit.remote(requestor_address, requestor_address), responder=audit.this_node(url),
        objects=audit.imaging_objects(patient_id_of_part10(answer.body) if sent else None,
                                      {study: [sop] if sent and sop else []} if study else {}),
        outcome=outcome, description=f"HTTP {answer.status}")


def flat_params(query: Any) -> dict[str, str]:
    """A QueryDict as one value per key (the last, as Django's ``get`` does)."""
    return {key: query.get(key, "") for key in query}
