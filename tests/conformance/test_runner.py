"""The runner over real HTTP: every selected case ends with a verdict and a reason, never a crash."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pydicom
import pytest
from django.core.management import call_command
from lxml import etree

from conformance import report
from conformance.manifest import load_manifest
from conformance.patients import Hl7Feed, PatientPool
from conformance.runner import FAIL, PASS, SKIP, Config, Runner
from tests.conformance.servers import free_port, mllp_server, soap_server

LINE = re.compile(r"^(PASS|FAIL|SKIP) (\S+) (.+)$")


@pytest.fixture(scope="module")
def manifest(corpus_dir: Path):
    return load_manifest(corpus_dir / "manifest.yaml")


def _run(manifest, endpoints: dict[str, str], patterns: list[str], feed=None):
    config = Config(endpoints=endpoints, feed_configured=feed is not None, timeout=10)
    pool = PatientPool(manifest.patients, feed)
    progress = io.StringIO()
    results = Runner(manifest, config, pool, progress=progress).run(manifest.select(patterns))
    return results, progress.getvalue()


def test_refusing_server_gets_a_verdict_and_reason_for_every_case(manifest) -> None:
    patterns = ["FIX-*", "REG-*", "SQ-0*", "REP-*", "IMG-*", "OPT-*"]
    with soap_server("failure") as (url, recorder), mllp_server("AA") as (port, fed):
        results, progress = _run(manifest, {"registry": url, "repository": url, "imaging-source": url},
                                 patterns, feed=Hl7Feed("127.0.0.1", port, timeout=5))
    by_id = {r.case.id: r for r in results}
    assert {c.id for c in manifest.select(patterns)} <= set(by_id)
    assert all(r.verdict in (PASS, FAIL, SKIP) and r.reason for r in results)
    assert "runner error" not in " ".join(r.reason for r in results)
    # Cases that only assert Failure pass against a server that refuses everything ...
    assert by_id["REG-12"].verdict == PASS
    assert by_id["FIX-01"].verdict == PASS  # the MLLP feed acknowledged AA
    # ... the others fail, each with the reason.
    assert by_id["REG-01"].verdict == FAIL and "status Failure, expected Success" in by_id["REG-01"].reason
    assert by_id["REG-09"].verdict == FAIL and "XDSUnknownPatientId" in by_id["REG-09"].reason
    assert by_id["REP-04"].verdict == FAIL and "XDSRepositoryMetadataError" in by_id["REP-04"].reason
    assert by_id["IMG-15"].verdict == SKIP and "blocked" in by_id["IMG-15"].reason
    assert by_id["IMG-04"].verdict == FAIL
    assert "[1/" in progress
    # Every fed patient went through ITI-8 once; PnR went out as MTOM with the document inside.
    assert len(fed) == len({m.split("PID|1||")[1].split("|")[0] for m in fed})
    pnr = [r for r in recorder.requests if r[0] == "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"]
    with_documents = [(ct, body) for _a, ct, body in pnr if b":Document id=" in body]
    assert with_documents and all(ct.startswith("multipart/related") for ct, _body in with_documents)
    assert all(b"Include" in body for _ct, body in with_documents)
    assert any(b"This is my document" in body for _ct, body in with_documents)  # the bytes travel as a part
    registers = [r for r in recorder.requests if r[0] == "urn:ihe:iti:2007:RegisterDocumentSet-b"]
    assert registers and all(b"urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0" in body for *_x, body in registers)


@pytest.mark.parametrize("mode,reason", [("html", "not SOAP"), ("garbage", "transport"),
                                         ("fault", "SOAP Fault")])
def test_bad_answers_become_failures_with_reasons(manifest, mode: str, reason: str) -> None:
    with soap_server(mode) as (url, _recorder):
        results, _progress = _run(manifest, {"registry": url, "repository": url, "imaging-source": ""},
                                  ["REG-01", "REP-13", "IMG-04"])
    by_id = {r.case.id: r for r in results}
    assert by_id["REG-01"].verdict == FAIL and reason in by_id["REG-01"].reason, by_id["REG-01"].reason
    assert by_id["REP-13"].verdict == FAIL
    assert by_id["IMG-04"].verdict == SKIP and "--imaging-source" in by_id["IMG-04"].reason


def test_connection_refused_and_missing_feed(manifest) -> None:
    url = f"http://127.0.0.1:{free_port()}/xds"
    results, _progress = _run(manifest, {"registry": url, "repository": "", "imaging-source": ""},
                              ["FIX-01", "REG-05", "REP-01"])
    by_id = {r.case.id: r for r in results}
    assert by_id["FIX-01"].verdict == SKIP and "--feed-hl7" in by_id["FIX-01"].reason
    assert by_id["REP-01"].verdict == SKIP and "--repository" in by_id["REP-01"].reason
    assert by_id["REG-04"].verdict == FAIL and "connection refused" in by_id["REG-04"].reason
    assert "dependency of REG-05" in by_id["REG-04"].reason
    assert by_id["REG-05"].verdict == FAIL


def test_junit_report(manifest, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/xds"
    results, _progress = _run(manifest, {"registry": url, "repository": "", "imaging-source": ""},
                              ["REG-01", "REP-01"])
    out = io.StringIO()
    report.console(results, out)
    lines = out.getvalue().splitlines()
    assert lines[-1] == "0 passed, 1 failed, 1 skipped"
    assert all(LINE.match(line) for line in lines[:-1])
    report.junit(results, tmp_path / "junit.xml")
    suite = etree.parse(str(tmp_path / "junit.xml")).getroot()[0]
    assert suite.get("tests") == "2" and suite.get("failures") == "1" and suite.get("skipped") == "1"
    assert suite.find("testcase[@name='REG-01']/failure") is not None
    assert suite.find("testcase[@name='REP-01']/skipped") is not None


def test_command_against_a_closed_port_fails_every_case(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("xds_conformance", "--registry", "http://127.0.0.1:1/", "--cases", "REG-*",
                     "--junit", str(tmp_path / "j.xml"), stdout=out, stderr=err)
    assert exited.value.code == 1
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"0 passed, \d+ failed, 0 skipped", lines[-1])
    assert lines[:-1] and all(line.startswith("FAIL REG-") and LINE.match(line) for line in lines[:-1])
    assert (tmp_path / "j.xml").is_file()


def test_rad69_images_are_checked_against_the_reference_study(manifest, corpus_dir: Path) -> None:
    from tests.conformance import servers

    folder = corpus_dir / "nist" / "_imagecache" / "std" / "IDS-DEPT002-a" / "images"
    servers.IMAGES.clear()
    for path in sorted(folder.glob("*.dcm")):
        servers.IMAGES[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path.read_bytes()
    try:
        with soap_server("imaging") as (url, _recorder):
            results, _progress = _run(manifest, {"registry": url, "repository": "", "imaging-source": url},
                                      ["IMG-04"])
            assert results[0].verdict == PASS, results[0].reason
            # One instance missing: sameRetImgs names it.
            missing = sorted(servers.IMAGES)[0]
            del servers.IMAGES[missing]
            results, _progress = _run(manifest, {"registry": url, "repository": "", "imaging-source": url},
                                      ["IMG-04"])
    finally:
        servers.IMAGES.clear()
    assert results[0].verdict == FAIL
    assert "validate-rad69-response" in results[0].reason and "not returned" in results[0].reason


def _build(runner: Runner, step_id: str):
    from conformance.runner import StepRecord

    step = runner.manifest.steps[step_id]
    record = StepRecord(step)
    runner.records[step_id] = record
    values = runner.bindings(step, record)
    request, attachments = runner.build_request(step, record, values)
    record.request = request
    runner._reports(step, record, "InputMetadata")
    return record, request, attachments


def test_requests_are_built_as_the_conventions_say(manifest) -> None:
    from conformance.xmlutil import descendants
    from xds_core.ebxml.schema import validate
    from xds_core.vocabulary import IdentificationScheme

    runner = Runner(manifest, Config(endpoints={}, feed_configured=False), PatientPool(manifest.patients, None),
                    progress=io.StringIO())
    # openxds: bare-dollar placeholders, longest first; attachment ids follow the generated UUIDs.
    record, request, attachments = _build(runner, "openxds/submit_multiple_documents")
    text = etree.tostring(request).decode()
    assert "$" not in text
    doc_ids = [d.get("id") for d in request if d.tag.endswith("}Document")]
    assert doc_ids == [record.exports["generated.$doc1"], record.exports["generated.$doc2"]]
    assert [a.path.name for a in attachments] == ["referral_summary.xml", "medical_summary.xml"]
    # NoAssignUids: the resubmission keeps the first submission's uniqueId.
    first, _request, _a = _build(runner, "12004/submit/submit")
    again, _request, _a = _build(runner, "12004/submit/resubmit_doc")
    assert again.exports["uid.Document01"] == first.exports["uid.Document01"]
    assert again.exports["uid.SubmissionSet01"] != first.exports["uid.SubmissionSet01"]
    # XDS-I: DocumentEntry.uniqueId stays the KOS SOP Instance UID; literal patient kept; MTOM attachment.
    record, request, attachments = _build(runner, "_imagecache/std/IDS-DEPT002-a/kos/submit_doc")
    kos_uid = str(pydicom.dcmread(attachments[0].path, stop_before_pixels=True).SOPInstanceUID)
    assert record.exports["uid.Document01"] == kos_uid
    assert record.patient == "IDS-AD002-a^^^&1.3.6.1.4.1.21367.2005.13.20.1000&ISO"
    assert record.exports["uuid.Document01"].startswith("urn:uuid:")
    assert attachments[0].content_type == "application/dicom"
    # Patient assignment overwrites every patientId; reports read the request as sent.
    record, request, _a = _build(runner, "12346/single_doc/submit_doc")
    patients = {e.get("value") for e in descendants(request, "ExternalIdentifier")
                if e.get("identificationScheme") in (IdentificationScheme.DocumentEntry_patientId,
                                                     IdentificationScheme.SubmissionSet_patientId)}
    assert patients == {runner.pool.resolve("P_SQ")}
    assert validate(request) == []
    record, _request, _a = _build(runner, "11992/submit/submit")
    assert record.exports["report.docid"] == record.exports["uuid.Document01"]
    assert record.exports["report.ssuid"] == record.exports["uid.SubmissionSet01"]
