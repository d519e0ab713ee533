"""DICOM TLS (PS3.15 B.10, the ITI-19 profile of xds_core.tls) and node identities on our listener, over loopback.

Real associations: pynetdicom as our own SCU, dcmtk's echoscu / storescp as an independent peer, real TLS
handshakes against a test PKI, the real node identity table (``atna``) in the test database (committed rows:
the listener's association threads read them on their own connections).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import Verification

from atna.models import NodeIdentity
from consumer.dicom_import import StoreRequestor, StoreScp
from imaging_source.dicom.admission import (
    CALLING_AE_NOT_RECOGNIZED,
    REJECTED_PERMANENT,
    SOURCE_SERVICE_USER,
    PeerAdmission,
)
from imaging_source.dicom.ae import AssociationError, associate, make_ae
from imaging_source.dicom.config import DicomConfig, ListenerLimits, Peer
from imaging_source.dicom.echo import echo
from imaging_source.dicom.scp import DicomListener, ReceivedInstance
from tests.tls_files import PkiFiles, issue_files
from xds_core import audit
from xds_core.identity import PeerCertificate
from xds_core.tls import TlsSettings, client_context, server_context

OUR_AE = "XDSI_IDS"
HANDSHAKE_TIMEOUT = 1.5
pytestmark = pytest.mark.django_db(transaction=True)
needs_dcmtk = pytest.mark.skipif(shutil.which("echoscu") is None, reason="dcmtk (Debian package) not installed")


@pytest.fixture(scope="module")
def domain(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    """A CA; our node; a modality the table lists; one the CA signed but the table does not list; a client of a
    CA we do not trust."""
    return issue_files(tmp_path_factory.mktemp("dicom-pki"), nodes={"node": "node.test"},
                       clients={"modality": ("modality", "source"), "unlisted": ("unlisted", "source")},
                       strangers={"stranger": ("intruder", "")})


def _settings(domain: PkiFiles, who: str) -> TlsSettings:
    return domain.settings(who)


def _fingerprint(path: Path) -> str:
    return PeerCertificate.from_der(ssl.PEM_cert_to_DER_cert(path.read_text())).sha256


@dataclass
class Running:
    listener: DicomListener
    port: int
    received: list[ReceivedInstance]
    events: list[audit.AuditEvent]

    def alerts(self) -> list[audit.AuditEvent]:
        return [e for e in self.events if e.event_id is audit.EventId.SECURITY_ALERT]

    def wait_for_alerts(self, count: int, timeout: float = 5.0) -> list[audit.AuditEvent]:
        deadline = time.monotonic() + timeout
        while len(self.alerts()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.alerts()


def _start(tmp_path: Path, context: ssl.SSLContext | None) -> Iterator[Running]:
    config = DicomConfig(OUR_AE, Peer("ORTHANC", "127.0.0.1", 1), spool_dir=tmp_path / "spool",
                         listener=ListenerLimits(max_associations=4, max_associations_per_ae=4, network_timeout=20))
    received: list[ReceivedInstance] = []
    admission = PeerAdmission.with_identity_table(context, handshake_timeout=HANDSHAKE_TIMEOUT)
    scp = DicomListener(config, on_instance=received.append, host="127.0.0.1", port=0, admission=admission)
    with audit.capture() as events:
        _host, port = scp.start()
        try:
            yield Running(scp, port, received, events)
        finally:
            scp.stop()


@pytest.fixture
def tls_listener(domain: dict[str, Path], tmp_path: Path) -> Iterator[Running]:
    """Our listener with TLS on; the table lists the modality's certificate (by fingerprint)."""
    NodeIdentity.objects.create(name="ct-modality", cert_sha256=_fingerprint(domain["modality"]), roles="source")
    yield from _start(tmp_path, server_context(_settings(domain, "node")))


@pytest.fixture
def plain_listener(tmp_path: Path) -> Iterator[Running]:
    yield from _start(tmp_path, None)


def _dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.PatientID = "TLS-TEST-1"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _associate(port: int, calling: str, context: ssl.SSLContext | None) -> object:
    ae = make_ae(calling, timeouts={"connection": 5, "acse": 5, "dimse": 5, "network": 5})
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    return ae.associate("127.0.0.1", port, ae_title=OUR_AE,
                        tls_args=(context, "127.0.0.1") if context is not None else None)


def _rejection(assoc: object) -> tuple[int, int, int]:
    rsp = assoc.acceptor.primitive  # type: ignore[attr-defined]
    return int(rsp.result), int(rsp.result_source), int(rsp.diagnostic)


def _echoscu(port: int, *tls: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["echoscu", "-aet", "MODALITY", "-aec", OUR_AE, "-to", "5", "-ta", "5", "-td", "5", *tls,
                           "127.0.0.1", str(port)], capture_output=True, text=True, timeout=30)


# --- admitted -------------------------------------------------------------------------------------------


def test_a_listed_certificate_echoes_and_stores_over_tls_and_is_named_in_the_audit_record(
        domain: dict[str, Path], tls_listener: Running) -> None:
    peer = Peer(OUR_AE, "127.0.0.1", tls_listener.port, client_context(_settings(domain, "modality")))
    ae = make_ae("MODALITY")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = associate(ae, peer)
    try:
        assert isinstance(assoc.dul.socket.socket, ssl.SSLSocket)
        assert assoc.dul.socket.socket.version() in ("TLSv1.2", "TLSv1.3")
        assert int(assoc.send_c_echo().Status) == 0x0000
        ds = _dataset()
        assert int(assoc.send_c_store(ds).Status) == 0x0000
    finally:
        assoc.release()
    assert [r.sop_instance_uid for r in tls_listener.received] == [ds.SOPInstanceUID]
    deadline = time.monotonic() + 5
    while not any(e.event_id is audit.EventId.DICOM_INSTANCES_TRANSFERRED for e in tls_listener.events):
        assert time.monotonic() < deadline, "no DICOM Instances Transferred event"
        time.sleep(0.02)
    stored = next(e for e in tls_listener.events if e.event_id is audit.EventId.DICOM_INSTANCES_TRANSFERRED)
    assert stored.requestor is not None and stored.requestor.user_name == "ct-modality"
    assert tls_listener.alerts() == []


@needs_dcmtk
def test_dcmtk_echoscu_with_a_listed_certificate_succeeds(domain: dict[str, Path], tls_listener: Running) -> None:
    done = _echoscu(tls_listener.port, "+tls", str(domain["modality_key"]), str(domain["modality"]),
                    "+cf", str(domain["ca"]))
    assert done.returncode == 0, done.stdout + done.stderr


def test_our_echo_and_the_consumers_store_requestor_present_our_certificate(
        domain: dict[str, Path], tls_listener: Running) -> None:
    context = client_context(_settings(domain, "modality"))
    assert echo("MODALITY", Peer(OUR_AE, "127.0.0.1", tls_listener.port, context), timeout=5).ok
    requestor = StoreRequestor("MODALITY", StoreScp(OUR_AE, "127.0.0.1", tls_listener.port, context))
    try:
        assert requestor.store(_dataset()) == 0x0000
    finally:
        requestor.close()
    assert len(tls_listener.received) == 1


# --- refused: no association ---------------------------------------------------------------------------


def _assert_handshake_alert(running: Running, words: str) -> None:
    alerts = running.wait_for_alerts(1)
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert alert.event_types == (audit.SecurityAlertType.NODE_AUTHENTICATION,)
    assert alert.outcome_description.startswith("TLS handshake failed")
    assert words in alert.outcome_description, alert.outcome_description
    assert alert.requestor is not None and alert.requestor.network_address == "127.0.0.1"
    assert alert.objects[0].object_id == f"dicom://{OUR_AE}@127.0.0.1:{running.port}"


@needs_dcmtk
def test_dcmtk_without_a_certificate_completes_no_association_and_raises_a_security_alert(
        domain: dict[str, Path], tls_listener: Running) -> None:
    done = _echoscu(tls_listener.port, "+tla", "+cf", str(domain["ca"]))
    assert done.returncode != 0
    assert tls_listener.received == []
    _assert_handshake_alert(tls_listener, "certificate")


def test_a_plain_tcp_client_completes_no_association(tls_listener: Running) -> None:
    assoc = _associate(tls_listener.port, "MODALITY", None)
    assert not assoc.is_established
    _assert_handshake_alert(tls_listener, "")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_a_tls_1_1_client_is_refused_in_the_handshake(domain: dict[str, Path], tls_listener: Running) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.load_cert_chain(domain["modality"], domain["modality_key"])
    with socket.create_connection(("127.0.0.1", tls_listener.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname="127.0.0.1")
    _assert_handshake_alert(tls_listener, "protocol")


def test_a_certificate_of_an_unknown_ca_completes_no_association(domain: dict[str, Path],
                                                                 tls_listener: Running) -> None:
    assoc = _associate(tls_listener.port, "MODALITY", client_context(_settings(domain, "stranger")))
    assert not assoc.is_established and not assoc.is_rejected
    _assert_handshake_alert(tls_listener, "certificate")
    assert tls_listener.received == []


# --- refused: A-ASSOCIATE-RJ -----------------------------------------------------------------------------


def test_a_verified_certificate_not_in_the_table_is_rejected_calling_ae_not_recognized(
        domain: dict[str, Path], tls_listener: Running) -> None:
    assoc = _associate(tls_listener.port, "MODALITY", client_context(_settings(domain, "unlisted")))
    assert assoc.is_rejected
    assert _rejection(assoc) == (REJECTED_PERMANENT, SOURCE_SERVICE_USER, CALLING_AE_NOT_RECOGNIZED) == (1, 1, 3)
    alerts = tls_listener.wait_for_alerts(1)
    assert [a.outcome_description for a in alerts] == ["certificate not in the node identity table"]
    assert alerts[0].requestor is not None and alerts[0].requestor.user_id.startswith("CN=unlisted")


def test_refusals_of_one_address_are_rate_limited_to_one_alert(domain: dict[str, Path],
                                                               tls_listener: Running) -> None:
    context = client_context(_settings(domain, "unlisted"))
    assert all(_associate(tls_listener.port, "MODALITY", context).is_rejected for _ in range(3))
    time.sleep(0.3)
    assert len(tls_listener.alerts()) == 1


def test_plain_mode_with_ae_rows_rejects_an_unknown_calling_ae_and_admits_a_listed_one(
        plain_listener: Running) -> None:
    NodeIdentity.objects.create(name="modality-at-loopback", ae_title="MODALITY", address="127.0.0.1", roles="source")
    NodeIdentity.objects.create(name="elsewhere", ae_title="FAR_AWAY", address="10.9.8.7", roles="source")
    unknown = _associate(plain_listener.port, "INTRUDER", None)
    assert unknown.is_rejected and _rejection(unknown) == (1, 1, 3)
    wrong_address = _associate(plain_listener.port, "FAR_AWAY", None)  # listed, but for another address
    assert wrong_address.is_rejected
    known = _associate(plain_listener.port, "MODALITY", None)
    assert known.is_established
    known.release()
    alerts = plain_listener.wait_for_alerts(1)
    assert alerts[0].requestor is not None and alerts[0].requestor.user_id == "INTRUDER"


def test_plain_mode_with_no_ae_rows_admits_any_calling_ae(plain_listener: Running) -> None:
    # Certificate rows alone do not close plain DICOM (the documented backwards-compatible default).
    NodeIdentity.objects.create(name="a-consumer", cert_subject="CN=consumer", roles="consumer")
    assoc = _associate(plain_listener.port, "ANYONE", None)
    assert assoc.is_established
    assoc.release()
    assert plain_listener.alerts() == []


# --- a silent client --------------------------------------------------------------------------------------


def test_a_silent_tls_client_does_not_block_others_and_is_dropped_after_the_handshake_timeout(
        domain: dict[str, Path], tls_listener: Running) -> None:
    silent = socket.create_connection(("127.0.0.1", tls_listener.port), timeout=10)
    try:
        time.sleep(0.1)  # accepted: its handshake now waits in its own thread
        started = time.perf_counter()
        peer = Peer(OUR_AE, "127.0.0.1", tls_listener.port, client_context(_settings(domain, "modality")))
        ae = make_ae("MODALITY")
        ae.add_requested_context(Verification)
        assoc = associate(ae, peer)
        assert int(assoc.send_c_echo().Status) == 0x0000
        assoc.release()
        assert time.perf_counter() - started < 1.0
        silent.settimeout(HANDSHAKE_TIMEOUT + 3)
        assert silent.recv(1) == b""  # closed by the listener once the handshake timed out
    finally:
        silent.close()
    _assert_handshake_alert(tls_listener, "timed out")


# --- our SCU against dcmtk's TLS storescp ---------------------------------------------------------------


@needs_dcmtk
def test_our_scu_speaks_tls_to_an_independent_scp_and_nothing_in_clear(domain: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scp = subprocess.Popen(["storescp", "-aet", "DCMTK_SCP", "+tls", str(domain["node_key"]), str(domain["node"]),
                            "+cf", str(domain["ca"]), "-od", str(tmp_path), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "storescp did not start"
                time.sleep(0.05)
        time.sleep(0.2)
        context = client_context(_settings(domain, "modality"))
        assert echo(OUR_AE, Peer("DCMTK_SCP", "127.0.0.1", port, context), timeout=5).ok
        ae = make_ae(OUR_AE, timeouts={"connection": 5, "acse": 5})
        ae.add_requested_context(Verification)
        with pytest.raises(AssociationError):  # the same peer without TLS: no association
            associate(ae, Peer("DCMTK_SCP", "127.0.0.1", port))
    finally:
        scp.terminate()
        scp.wait(10)


# --- which peers speak TLS (settings -> DicomConfig) ----------------------------------------------------------


def test_the_pacs_speaks_tls_as_the_node_unless_its_setting_says_otherwise(domain: dict[str, Path]) -> None:
    from types import SimpleNamespace

    from imaging_source.dicom.config import PeerTls

    context = client_context(_settings(domain, "node"))
    base = {"DICOM_AE_TITLE": OUR_AE, "DICOM_PACS": {"ae_title": "PACS", "host": "127.0.0.1", "port": 4242},
            "DICOMWEB_URL": "https://127.0.0.1:8042/dicom-web", "DICOM_PORT": 11112, "VAR_DIR": "/tmp",
            "XDS_TLS": "off"}
    plain = DicomConfig.from_settings(SimpleNamespace(**base))
    assert plain.pacs.tls is None and plain.pacs.tls_args is None and plain.tls is None
    node = DicomConfig.from_settings(SimpleNamespace(**base, DICOM_PACS_TLS="node"), tls=context)
    assert node.pacs.tls is context and node.pacs.tls_args == (context, "127.0.0.1") and node.tls is context
    legacy = DicomConfig.from_settings(SimpleNamespace(**base, DICOM_PACS_TLS="off"), tls=context)
    assert legacy.pacs.tls is None and legacy.tls is context  # DICOMweb still with our certificate
    with pytest.raises(ValueError, match="XDS_TLS is off"):
        PeerTls.ON.context(None)
