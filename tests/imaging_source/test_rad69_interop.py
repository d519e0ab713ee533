"""RAD-69 of the NIST study (IDS-DEPT002-a, in the local Orthanc) through independent readers.

Two gunicorn servers in front of the same PACS, one per ``XDS_RAD69_ROOT_LAST``:

* zeep 4.3.3, built from the served WSDL alone (tests/zeep_offline.py), reads the answer of the
  root-first configuration and hands back every instance byte for byte as the PACS stores it.
  With root last (the default) it fails: zeep parses ``decoder.parts[0]`` as the envelope and
  never looks at ``start`` (zeep/wsdl/bindings/soap.py, ``SoapBinding.process_reply``).  That
  test pins zeep's first-part assumption as documentation - the answer itself is standard MTOM,
  as the stdlib parser shows - and is why a zeep consumer needs XDS_RAD69_ROOT_LAST=false
  (config/settings.py; imaging_source/soap_operations.py explains the default).
* Python's ``email.parser`` reads both answers (tests/mime_check.py): ``start`` names the root
  (first, or last), every ``xop:Include`` names a part, and the parts are the PACS's files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import requests
import zeep.exceptions
from pydicom.uid import ExplicitVRLittleEndian

from imaging_source.dicom.find import find_study
from imaging_source.study import StudyRef
from tests.gunicorn_server import Server, run_gunicorn
from tests.mime_check import XOP_INCLUDE, independent_mtom_read
from tests.zeep_offline import zeep_client
from xds_core import ns
from xds_core.ebxml.messages import DocumentRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest
from xds_core.ebxml.serialize import retrieve_imaging_document_set_request
from xds_core.ns import q
from xds_core.safe_xml import to_bytes
from xds_core.soap.envelope import build_envelope
from xds_core.vocabulary import DICOM_MIME_TYPE, Action, ResponseStatus

from .pacs_fixtures import NIST_STUDY_UID, Pacs

pytestmark = pytest.mark.pacs

SOURCE_ID = "1.3.6.1.4.1.21367.13.80.110"
ROOT_ORDERS = ("root-first", "root-last")


@pytest.fixture(scope="module")
def servers(pacs: Pacs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """``{"root-first": ..., "root-last": ...}``: the same Imaging Document Source, both settings."""
    with ExitStack() as stack:
        running: dict[str, Server] = {}
        for order in ROOT_ORDERS:
            work = tmp_path_factory.mktemp(f"rad69-{order}")
            running[order] = stack.enter_context(run_gunicorn({
                "XDS_VAR_DIR": str(work / "var"),
                "DATABASE_URL": f"sqlite:///{work / 'xds.sqlite3'}",
                "XDS_IMAGING_SOURCE_ID": SOURCE_ID,
                "DICOM_AE_TITLE": pacs.ae_title,
                "DICOM_PACS": f"ORTHANC@127.0.0.1:{pacs.dicom_port}",
                "DICOMWEB_URL": pacs.dicomweb_url,
                "DICOM_FETCH_METHOD": "wado-rs",
                "XDS_RAD69_ROOT_LAST": "true" if order == "root-last" else "false",
            }, spool=work))
        yield running


@pytest.fixture(scope="module")
def study(pacs: Pacs) -> StudyRef:
    return find_study(NIST_STUDY_UID, pacs.config())


@pytest.fixture(scope="module")
def originals(pacs: Pacs, study: StudyRef) -> dict[str, bytes]:
    """SOP Instance UID -> the instance as the PACS stores it (Orthanc's REST API, not DICOMweb)."""
    out = {}
    for series in study.series:
        for instance in series.instances:
            found = requests.post(f"{pacs.rest_url}/tools/lookup", data=instance.sop_instance_uid, timeout=30).json()
            out[instance.sop_instance_uid] = requests.get(f"{pacs.rest_url}/instances/{found[0]['ID']}/file",
                                                          timeout=30).content
    assert len(out) > 1
    return out


def _zeep_retrieve(server: Server, study: StudyRef, answers: list[requests.Response]) -> object:
    """RAD-69 (RAD TF-3 4.69.4.1) for the whole study through zeep's generated service."""
    client, session = zeep_client(server.endpoint("imaging-source") + "?wsdl")
    session.hooks["response"].append(lambda response, **_: answers.append(response))
    return client.service.RetrieveImagingDocumentSet(
        StudyRequest=[{"studyInstanceUID": study.study_instance_uid, "SeriesRequest": [
            {"seriesInstanceUID": series.series_instance_uid,
             "DocumentRequest": [{"RepositoryUniqueId": SOURCE_ID, "DocumentUniqueId": instance.sop_instance_uid}
                                 for instance in series.instances]}
            for series in study.series]}],
        TransferSyntaxUIDList={"TransferSyntaxUID": [ExplicitVRLittleEndian]})


def test_zeep_reads_rad69_with_the_root_first_configuration(servers: dict[str, Server], study: StudyRef,
                                                            originals: dict[str, bytes]) -> None:
    answers: list[requests.Response] = []
    response = _zeep_retrieve(servers["root-first"], study, answers)
    assert answers[-1].headers["Content-Type"].startswith("multipart/related;")
    assert response.RegistryResponse.status == ResponseStatus.SUCCESS.value
    assert response.RegistryResponse.RegistryErrorList is None
    assert {d.RepositoryUniqueId for d in response.DocumentResponse} == {SOURCE_ID}
    assert {d.mimeType for d in response.DocumentResponse} == {DICOM_MIME_TYPE}
    assert {d.DocumentUniqueId: d.Document for d in response.DocumentResponse} == originals


def test_zeep_takes_the_first_part_as_the_envelope_so_the_root_last_default_breaks_it(
        servers: dict[str, Server], study: StudyRef, originals: dict[str, bytes]) -> None:
    """Documentation of zeep 4.3.3, not a wish: it ignores ``start`` (RFC 2387 §3.2)."""
    answers: list[requests.Response] = []
    with pytest.raises(zeep.exceptions.TransportError, match=re.escape("Server returned response (200) with "
                                                                       "invalid XML")):
        _zeep_retrieve(servers["root-last"], study, answers)
    # What zeep choked on is a standard MTOM package: start names the last part, which is the root.
    answer = answers[-1]
    reading = independent_mtom_read(answer.headers["Content-Type"], answer.content)
    assert reading.root_index == reading.part_count - 1 == len(originals)
    assert sorted(reading.included.values()) == sorted(originals.values())


@pytest.mark.parametrize("order", ROOT_ORDERS)
def test_rad69_answer_read_by_the_stdlib_mime_parser_names_its_root_and_every_instance(
        servers: dict[str, Server], study: StudyRef, originals: dict[str, bytes], order: str) -> None:
    endpoint = servers[order].endpoint("imaging-source")
    request = retrieve_imaging_document_set_request(RetrieveImagingDocumentSetRequest(
        [StudyRequest(study.study_instance_uid, [
            SeriesRequest(s.series_instance_uid, [DocumentRequest(SOURCE_ID, i.sop_instance_uid) for i in s.instances])
            for s in study.series])], [ExplicitVRLittleEndian]))
    envelope = to_bytes(build_envelope(Action.RetrieveImagingDocumentSet.value, request, to=endpoint,
                                       reply_to=ns.WSA_ANONYMOUS))
    response = requests.post(endpoint, data=envelope, timeout=120, headers={
        "Content-Type": f'application/soap+xml; charset=UTF-8; action="{Action.RetrieveImagingDocumentSet.value}"',
        "Accept-Encoding": "identity"})
    assert response.status_code == 200
    reading = independent_mtom_read(response.headers["Content-Type"], response.content)
    assert reading.part_count == len(originals) + 1
    assert reading.root_index == (0 if order == "root-first" else len(originals))
    assert reading.envelope.findtext(f"{q(ns.SOAP12, 'Header')}/{q(ns.WSA, 'Action')}") == \
        Action.RetrieveImagingDocumentSetResponse.value
    got = {}
    for document_response in reading.envelope.iter(q(ns.XDSB, "DocumentResponse")):
        include = document_response.find(f"{q(ns.XDSB, 'Document')}/{XOP_INCLUDE}")
        got[document_response.findtext(q(ns.XDSB, "DocumentUniqueId"))] = reading.included[include.get("href")]
    assert got == originals
