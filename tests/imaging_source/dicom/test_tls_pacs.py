"""RAD-69's PACS side with everything under TLS: a private Orthanc (local-pacs.sh, XDS_TLS=on) whose DICOM port
speaks DICOM TLS and whose HTTP port is HTTPS with client certificates required, and our fetches (WADO-RS over
HTTPS, C-GET over DICOM TLS, C-MOVE into our own TLS listener) presenting the node certificate; and the
consumer's import into that PACS (C-STORE over DICOM TLS, STOW-RS over HTTPS).

As in the demo, the PACS and our node present the same node certificate (XDS_TLS_CERT); our listener admits
the PACS's C-MOVE sub-operations because that certificate is in the node identity table.
"""

from __future__ import annotations

import hashlib
import io
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from atna.models import NodeIdentity
from consumer.destinations import InstanceRef
from consumer.dicom_import import StoreScp
from consumer.pacs_import import DicomImport, DicomwebImport, reconciliation_for
from imaging_source.dicom.admission import PeerAdmission
from imaging_source.dicom.ae import AssociationError, associate, make_ae
from imaging_source.dicom.config import DicomConfig, FetchMethod, Peer
from imaging_source.dicom.fetch import FetchStream
from imaging_source.dicom.find import QidoFinder
from imaging_source.dicom.instances import SeriesFetch
from imaging_source.dicom.scp import DicomListener
from tests.conftest import CORPUS_DIR
from tests.faults.orthanc import PrivateOrthanc, TlsFiles, free_port, private_orthanc
from xds_core import audit, pki
from xds_core.ebxml.messages import DocumentRequest, RetrieveImagingDocumentSetRequest, SeriesRequest, StudyRequest
from xds_core.ebxml.parse import parse_retrieve_document_set_response
from xds_core.ebxml.serialize import retrieve_imaging_document_set_request
from xds_core.identity import PeerCertificate
from xds_core.soap.client import SoapClient
from xds_core.tls import TlsAdapter, TlsSettings, client_context, server_context
from xds_core.vocabulary import Action, ResponseStatus

pytestmark = [pytest.mark.slow]

IMAGES = CORPUS_DIR / "nist" / "_imagecache" / "std" / "IDS-DEPT002-a" / "images"
XDSI_AET = "XDSI_TLS"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> TlsSettings:
    root = tmp_path_factory.mktemp("pacs-pki")
    ca = pki.issue_ca()
    (root / "ca.crt").write_bytes(ca.cert_pem)
    cert, key = pki.issue(ca, "hospital.test", dns_names=("localhost",), addresses=("127.0.0.1",)).write(root, "node")
    return TlsSettings(enabled=True, cert=str(cert), key=str(key), ca=(str(root / "ca.crt"),))


@pytest.fixture(scope="module")
def files() -> list[Path]:
    found = sorted(IMAGES.glob("*.dcm"))
    assert len(found) == 36, f"NIST images missing under {IMAGES}"
    return found


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, node: TlsSettings, files: list[Path]) -> Iterator[PrivateOrthanc]:
    tls = TlsFiles(Path(node.cert), Path(node.key), tuple(Path(c) for c in node.ca))
    with private_orthanc(tmp_path_factory.mktemp("tls-pacs"), xdsi_aet=XDSI_AET, xdsi_port=free_port(),
                         tls=tls) as orthanc:
        orthanc.load(*files)
        yield orthanc


@pytest.fixture(scope="module")
def session(node: TlsSettings) -> requests.Session:
    session = requests.Session()
    session.mount("https://", TlsAdapter(client_context(node)))
    return session


def _series(files: list[Path]) -> list[SeriesFetch]:
    groups: dict[tuple[str, str], list[str]] = {}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        groups.setdefault((ds.StudyInstanceUID, ds.SeriesInstanceUID), []).append(ds.SOPInstanceUID)
    return [SeriesFetch(study, series, sops) for (study, series), sops in groups.items()]


def _pixels(data: bytes) -> str:
    return hashlib.sha1(pydicom.dcmread(io.BytesIO(data)).PixelData).hexdigest()


@pytest.fixture(scope="module")
def originals(files: list[Path]) -> dict[str, str]:
    return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: _pixels(p.read_bytes()) for p in files}


def _config(pacs: PrivateOrthanc, node: TlsSettings, method: FetchMethod, spool: Path) -> DicomConfig:
    context = client_context(node)
    peer = Peer(pacs.ae_title, "127.0.0.1", pacs.dicom_port, context)
    return DicomConfig(XDSI_AET, peer, pacs.dicomweb_url if method == FetchMethod.WADO_RS else "", method,
                       scp_port=pacs.xdsi_port, spool_dir=spool, tls=context)


def _fetch(config: DicomConfig, files: list[Path]) -> tuple[dict[str, str], float]:
    started = time.perf_counter()
    delivered = {key[1]: _pixels(instance.read_bytes()) for key, instance in FetchStream(config, _series(files))}
    return delivered, time.perf_counter() - started


def test_the_pacs_answers_https_only_with_a_client_certificate(pacs: PrivateOrthanc, node: TlsSettings,
                                                               session: requests.Session) -> None:
    assert pacs.rest_url.startswith("https://")
    assert session.get(f"{pacs.rest_url}/system", timeout=10).status_code == 200
    anonymous = requests.Session()
    with pytest.raises(requests.exceptions.RequestException):  # no client certificate: no answer
        anonymous.get(f"{pacs.rest_url}/system", verify=node.ca[0], timeout=10)
    with pytest.raises(requests.exceptions.RequestException):  # plain HTTP on the HTTPS port: no answer
        requests.get(f"http://127.0.0.1:{pacs.http_port}/system", timeout=10)


def test_the_pacs_dicom_port_refuses_a_plain_association(pacs: PrivateOrthanc) -> None:
    ae = make_ae(XDSI_AET, timeouts={"connection": 5, "acse": 5})
    ae.add_requested_context("1.2.840.10008.1.1")
    with pytest.raises(AssociationError):
        associate(ae, Peer(pacs.ae_title, "127.0.0.1", pacs.dicom_port))


@pytest.mark.parametrize("port", ["dicom", "http"])
def test_the_pacs_refuses_tls_1_1_even_with_a_good_certificate(pacs: PrivateOrthanc, node: TlsSettings,
                                                                 port: str) -> None:
    """PS3.15 B.10 / ITI-19: no TLS 1.1 on either PACS port (Orthanc's DICOM TLS gets its floor from OpenSSL's
    configuration, local-pacs.sh)."""
    number = pacs.dicom_port if port == "dicom" else pacs.http_port
    result = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{number}", "-tls1_1",
                             "-cipher", "DEFAULT@SECLEVEL=0", "-cert", node.cert, "-key", node.key],
                            input=b"", capture_output=True, timeout=30)
    assert b"Cipher is (NONE)" in result.stdout or b"alert protocol version" in result.stderr, result.stdout[-300:]


def test_wado_rs_over_https_delivers_every_instance(pacs: PrivateOrthanc, node: TlsSettings, files: list[Path],
                                                    originals: dict[str, str], tmp_path: Path) -> None:
    delivered, elapsed = _fetch(_config(pacs, node, FetchMethod.WADO_RS, tmp_path / "spool"), files)
    print(f"\nWADO-RS over HTTPS (socat front, client certificate): 36 instances in {elapsed * 1000:.0f} ms")
    assert delivered == originals


def test_qido_rs_over_https_finds_the_study(pacs: PrivateOrthanc, node: TlsSettings, files: list[Path],
                                            tmp_path: Path) -> None:
    finder = QidoFinder(_config(pacs, node, FetchMethod.WADO_RS, tmp_path / "spool"))
    study = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    assert finder.study_instance_counts()[study] == 36


def test_c_get_over_dicom_tls_delivers_every_instance(pacs: PrivateOrthanc, node: TlsSettings, files: list[Path],
                                                      originals: dict[str, str], tmp_path: Path) -> None:
    delivered, elapsed = _fetch(_config(pacs, node, FetchMethod.C_GET, tmp_path / "spool"), files)
    print(f"\nC-GET over DICOM TLS: 36 instances in {elapsed * 1000:.0f} ms")
    assert delivered == originals


@pytest.mark.django_db(transaction=True)
def test_c_move_into_our_tls_listener_admits_the_pacs_by_its_certificate(
        pacs: PrivateOrthanc, node: TlsSettings, files: list[Path], originals: dict[str, str], tmp_path: Path) -> None:
    pem = Path(node.cert).read_text()
    NodeIdentity.objects.create(name="local-pacs", roles="source",
                                cert_sha256=PeerCertificate.from_der(ssl.PEM_cert_to_DER_cert(pem)).sha256)
    config = _config(pacs, node, FetchMethod.C_MOVE, tmp_path / "spool")
    listener = DicomListener(config, admission=PeerAdmission.with_identity_table(server_context(node)))
    with audit.capture() as events:
        listener.start()
        try:
            delivered, elapsed = _fetch(config, files)
        finally:
            listener.stop()
    print(f"\nC-MOVE over DICOM TLS into our TLS listener: 36 instances in {elapsed * 1000:.0f} ms")
    assert delivered == originals
    assert [e for e in events if e.event_id is audit.EventId.SECURITY_ALERT] == []


def _new_instance(tmp_path: Path) -> tuple[InstanceRef, Path]:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "new.dcm"
    ds.save_as(path)
    return InstanceRef(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SOPClassUID), path


RECONCILIATION = ("TLS-1^^^&1.3.6.1.4.1.21367.13.82.1&ISO", "AD-1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO")


@pytest.mark.parametrize("kind", ["c-store", "stow-rs"])
def test_the_consumers_import_reaches_the_pacs_over_tls(pacs: PrivateOrthanc, node: TlsSettings,
                                                        session: requests.Session, tmp_path: Path, kind: str) -> None:
    """consumer/dicom_import.py (C-STORE over DICOM TLS) and consumer/pacs_import.py (STOW-RS over HTTPS)."""
    ref, path = _new_instance(tmp_path)
    reconciliation = reconciliation_for(*RECONCILIATION, "test-consumer")
    context = client_context(node)
    destination: DicomImport | DicomwebImport
    if kind == "c-store":
        destination = DicomImport(XDSI_AET, StoreScp(pacs.ae_title, "127.0.0.1", pacs.dicom_port, context),
                                  reconciliation)
        destination.put(ref, path)
    else:
        destination = DicomwebImport(pacs.dicomweb_url, reconciliation, tls=context)
        destination.put(ref, path)
        assert destination.flush() == {}
    destination.close()
    found = session.post(f"{pacs.rest_url}/tools/lookup", data=ref.sop_instance_uid, timeout=10).json()
    assert len(found) == 1 and found[0]["Type"] == "Instance"


def _forget_node_tls() -> None:
    """atna.tls reads the XDS_TLS settings once per process: forgotten around a test that changes them."""
    from atna import tls

    for cached in (tls.node_tls, tls.node_server_context, tls.node_client_context):
        cached.cache_clear()


@pytest.mark.django_db
@pytest.mark.parametrize("method", [FetchMethod.WADO_RS, FetchMethod.C_GET])
def test_rad69_end_to_end_from_the_pacs_under_tls(pacs: PrivateOrthanc, node: TlsSettings, settings,  # type: ignore[no-untyped-def]
                                                  files: list[Path], originals: dict[str, str], tmp_path: Path,
                                                  method: FetchMethod) -> None:
    """RetrieveImagingDocumentSet (RAD-69) through our Imaging Document Source, built from settings as in
    production (DicomConfig.from_settings: XDS_TLS on -> the node client context for the PACS)."""
    source_id = "1.3.6.1.4.1.21367.13.80.119"
    settings.XDS_TLS, settings.XDS_TLS_CERT, settings.XDS_TLS_KEY = "on", node.cert, node.key
    settings.XDS_TLS_CA, settings.XDS_TLS_PINNED = list(node.ca), []
    settings.XDS_IMAGING_SOURCE_ID, settings.XDS_RAD69_ROOT_LAST = source_id, False
    settings.DICOM_AE_TITLE, settings.DICOM_PORT = XDSI_AET, pacs.xdsi_port
    settings.DICOM_PACS = {"ae_title": pacs.ae_title, "host": "127.0.0.1", "port": pacs.dicom_port}
    settings.DICOMWEB_URL = pacs.dicomweb_url if method == FetchMethod.WADO_RS else ""
    settings.DICOM_FETCH_METHOD, settings.DICOM_SPOOL_DIR = method.value, str(tmp_path / "spool")
    _forget_node_tls()
    try:
        request = RetrieveImagingDocumentSetRequest([StudyRequest(study, [
            SeriesRequest(item.series_instance_uid, [DocumentRequest(source_id, sop) for sop in item.sop_instance_uids])
            for item in _series(files) if item.study_instance_uid == study])
            for study in {item.study_instance_uid for item in _series(files)}], [ExplicitVRLittleEndian])
        started = time.perf_counter()
        result = SoapClient("local:imaging-source").call(Action.RetrieveImagingDocumentSet.value,
                                                         retrieve_imaging_document_set_request(request))
        try:
            elapsed = time.perf_counter() - started
            status, errors, documents = parse_retrieve_document_set_response(result.body)
            assert status == ResponseStatus.SUCCESS.value, errors
            delivered = {d.document_unique_id: _pixels(result.binary(d.element).read_bytes()) for d in documents}
        finally:
            result.close()
    finally:
        _forget_node_tls()
    print(f"\nRAD-69 ({method.value}, PACS under TLS): 36 instances in {elapsed * 1000:.0f} ms")
    assert delivered == originals
