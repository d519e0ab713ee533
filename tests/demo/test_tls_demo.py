"""``XDS_TLS=demo make run`` end to end (slow: once, on the PostgreSQL pass of CI): the real supervisor makes the
demo PKI, every site a secure node, and the demo data loads over TLS.  Then, on every listener -- each site's web
port, the domain's MLLP port, each hospital's DICOM port, each Orthanc's DICOM and HTTP ports -- ``openssl
s_client`` without a certificate, and with TLS 1.1 (even with a good certificate), completes no request: not one
byte of answer comes back.  The ``consumer`` certificate's ITI-18 by curl succeeds; curl without a certificate
fails; the domain's audit trail verifies.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from atna.pki_demo import DemoPki
from demo.studies import NIST_PATIENT, NIST_STUDY_UID, affinity_cx
from tests.demo_process import BASE_DIR, Demo, running_demo

pytestmark = [pytest.mark.slow, pytest.mark.pacs]

HTTP_PROBE = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
#: MLLP frame (HL7 v2 MLLP: VT ... FS CR) of an ADT^A01 that would be answered with an ACK.
MLLP_PROBE = (b"\x0bMSH|^~\\&|PROBE|PROBE|XDS|XDS|20260101000000||ADT^A01^ADT_A01|TLS-PROBE-1|P|2.5\r"
              b"PID|||TLS-PROBE-1^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO\r\x1c\r")
#: Bytes where a DICOM A-ASSOCIATE-RQ would be: whatever they are, an unauthenticated peer must get none back.
DICOM_PROBE = b"\x01\x00\x00\x00\x00\x44" + b"\x00" * 68


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    var = tmp_path_factory.mktemp("tls-demo") / "var"
    with running_demo(var, "demo_tls", {"XDS_TLS": "demo", "XDS_PKI_DIR": str(var / "pki")}) as running:
        yield running


def _pki(demo: Demo) -> DemoPki:
    return DemoPki(Path(demo.env["XDS_PKI_DIR"]))


def _listeners(demo: Demo) -> list[tuple[str, int, bytes]]:
    p = demo.ports
    return [("domain web", p["PORT"], HTTP_PROBE), ("domain MLLP", p["HL7_PORT"], MLLP_PROBE),
            ("A web", p["HOSPITAL_A_HTTP_PORT"], HTTP_PROBE), ("B web", p["HOSPITAL_B_HTTP_PORT"], HTTP_PROBE),
            ("A DICOM", p["HOSPITAL_A_DICOM_PORT"], DICOM_PROBE), ("B DICOM", p["HOSPITAL_B_DICOM_PORT"], DICOM_PROBE),
            ("A Orthanc DICOM", p["HOSPITAL_A_PACS_DICOM_PORT"], DICOM_PROBE),
            ("A Orthanc HTTP", p["HOSPITAL_A_PACS_HTTP_PORT"], HTTP_PROBE),
            ("B Orthanc DICOM", p["HOSPITAL_B_PACS_DICOM_PORT"], DICOM_PROBE),
            ("B Orthanc HTTP", p["HOSPITAL_B_PACS_HTTP_PORT"], HTTP_PROBE)]


def _s_client(port: int, payload: bytes, *options: str) -> tuple[bytes, str]:
    """What ``openssl s_client`` received as application data (``-quiet``: nothing else on stdout), and its
    diagnostics."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", *options]
    try:
        done = subprocess.run(argv, input=payload, capture_output=True, timeout=30)
        return done.stdout, done.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as exc:  # the listener kept the socket: still nothing may have come back
        return exc.stdout or b"", (exc.stderr or b"").decode("utf-8", "replace") + " (timed out)"


def test_a_client_without_a_certificate_completes_no_request_on_any_listener(demo: Demo) -> None:
    ca = str(_pki(demo).ca.cert)
    for name, port, payload in _listeners(demo):
        received, diagnostics = _s_client(port, payload, "-CAfile", ca)
        assert received == b"", f"{name} (:{port}) answered a client without a certificate: {received[:200]!r}"
        assert "Verify return code: 0" in diagnostics or "verify return:1" in diagnostics, (name, diagnostics)


def test_tls_1_1_completes_no_request_on_any_listener_even_with_a_good_certificate(demo: Demo) -> None:
    pki = _pki(demo)
    consumer = pki.client("consumer")
    for name, port, payload in _listeners(demo):
        # SECLEVEL=0: this client is able to offer TLS 1.1 (OpenSSL 3 would refuse by itself otherwise).
        received, diagnostics = _s_client(port, payload, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile",
                                          str(pki.ca.cert), "-cert", str(consumer.cert), "-key", str(consumer.key))
        assert received == b"", f"{name} (:{port}) answered TLS 1.1: {received[:200]!r}"
        assert "alert" in diagnostics.lower() or "error" in diagnostics.lower(), (name, diagnostics)


def test_the_probe_does_get_an_answer_with_a_known_certificate(demo: Demo) -> None:
    """The two tests above are not vacuous: the same probe with the consumer certificate is answered."""
    pki = _pki(demo)
    consumer = pki.client("consumer")
    for port in (demo.ports["PORT"], demo.ports["HOSPITAL_A_HTTP_PORT"], demo.ports["HOSPITAL_B_HTTP_PORT"]):
        received, diagnostics = _s_client(port, HTTP_PROBE, "-CAfile", str(pki.ca.cert), "-cert", str(consumer.cert),
                                          "-key", str(consumer.key))
        assert received.startswith(b"HTTP/1.1 200"), (port, received[:300], diagnostics)


def _iti18(url: str) -> str:
    patient = affinity_cx(NIST_PATIENT.affinity_id).replace("&", "&amp;")
    return f"""<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"
 xmlns:wsa="http://www.w3.org/2005/08/addressing">
 <soap:Header>
  <wsa:Action soap:mustUnderstand="1">urn:ihe:iti:2007:RegistryStoredQuery</wsa:Action>
  <wsa:MessageID>urn:uuid:{uuid.uuid4()}</wsa:MessageID>
  <wsa:ReplyTo><wsa:Address>http://www.w3.org/2005/08/addressing/anonymous</wsa:Address></wsa:ReplyTo>
  <wsa:To soap:mustUnderstand="1">{url}</wsa:To>
 </soap:Header>
 <soap:Body>
  <query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
   xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
   <query:ResponseOption returnType="ObjectRef" returnComposedObjects="true"/>
   <rim:AdhocQuery id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d">
    <rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList>
     <rim:Value>'{patient}'</rim:Value></rim:ValueList></rim:Slot>
    <rim:Slot name="$XDSDocumentEntryStatus"><rim:ValueList>
     <rim:Value>('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')</rim:Value></rim:ValueList></rim:Slot>
   </rim:AdhocQuery>
  </query:AdhocQueryRequest>
 </soap:Body>
</soap:Envelope>"""


def _curl(url: str, body: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "60", "--data-binary", "@-",
                           "-H", 'Content-Type: application/soap+xml; charset=UTF-8; '
                                 'action="urn:ihe:iti:2007:RegistryStoredQuery"', *options, url],
                          input=body, capture_output=True, text=True, timeout=90)


def test_the_consumer_certificates_iti18_succeeds_and_no_certificate_fails(demo: Demo) -> None:
    pki = _pki(demo)
    consumer = pki.client("consumer")
    url = f"https://127.0.0.1:{demo.ports['PORT']}/xds/registry"
    (curl_line,) = [line for line in demo.output if "curl --cert" in line]  # the banner says how: it works
    printed = subprocess.run(shlex.split(curl_line.strip()), cwd=BASE_DIR, capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0 and "definitions" in printed.stdout, printed.stderr

    answered = _curl(url, _iti18(url), "--cert", str(consumer.cert), "--key", str(consumer.key),
                     "--cacert", str(pki.ca.cert))

    assert answered.returncode == 0, answered.stderr
    assert 'status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"' in answered.stdout
    assert "ObjectRef" in answered.stdout  # the demo's manifests of the NIST patient
    refused = _curl(url, _iti18(url), "--cacert", str(pki.ca.cert))
    assert refused.returncode != 0 and "AdhocQueryResponse" not in refused.stdout


def test_every_site_serves_https_and_the_domains_audit_trail_verifies(demo: Demo) -> None:
    banner = demo.text()
    for key in ("PORT", "HOSPITAL_A_HTTP_PORT", "HOSPITAL_B_HTTP_PORT"):
        assert f"https://127.0.0.1:{demo.ports[key]}/" in banner
    assert f"http://127.0.0.1:{demo.ports['PORT']}/" not in banner
    env_file = Path(demo.env["XDS_VAR_DIR"]) / "demo" / "domain.env"
    verified = subprocess.run([sys.executable, "manage.py", "xds_audit", "verify",
                               "--schema"], cwd=BASE_DIR, env={**demo.env, "XDS_ENV_FILE": str(env_file)},
                              capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_the_printed_commands_work_over_tls(demo: Demo) -> None:
    """As a site, over TLS with its node certificate: the consumer import (ITI-18 and ITI-43 to the domain, RAD-69
    to Hospital A, DICOM TLS C-STORE into Orthanc B) and an MPPS to Hospital B's DICOM listener."""
    fetched = demo.run_printed(demo.line("xds_fetch"))
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert f"study {NIST_STUDY_UID}: 36/36 instances present" in fetched.stdout
    sent = demo.run_printed(demo.line("xds_demo_mpps"))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "status=0x0000" in sent.stdout
