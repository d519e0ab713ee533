"""retrieve_manifest: the NIST study's manifest retrieved with RAD-69 from our Imaging Document Source over HTTP.

Real parts only: gunicorn serving the IDS in front of the test Orthanc (the ``pacs`` fixture), the
NIST reference KOS read with kos.reader, files on disk; faults come from loopback proxies between
the consumer and the IDS (tests/consumer/http_faults.py) or are injected at the file writer.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from consumer.destinations import InstanceRef
from consumer.files import FilesDestination
from consumer.retrieval import (
    DESTINATION_ERROR,
    EXPLICIT_VR_LITTLE_ENDIAN,
    TRANSPORT_ERROR,
    ProgressEvent,
    RetrievalReport,
    RetrievalSetupError,
    retrieve_manifest,
)
from kos.reader import Manifest, ManifestInstance, read_manifest
from tests.consumer.http_faults import CorruptingProxy, CuttingProxy, IdsProxy
from tests.gunicorn_server import Server, run_gunicorn
from tests.imaging_source.pacs_fixtures import NIST_STUDY_UID
from xds_core.vocabulary import ResponseStatus

pytestmark = pytest.mark.pacs

NIST_KOS = (Path(__file__).resolve().parents[2] / "conformance" / "corpus" / "nist" / "_imagecache" / "std"
            / "IDS-DEPT002-a" / "kos" / "kos.dcm")
#: The Retrieve Location UID the NIST KOS names; our IDS is configured with it (XDS_IMAGING_SOURCE_ID).
LOCATION_UID = "1.3.6.1.4.1.21367.13.80.110"
SYNTAXES = [EXPLICIT_VR_LITTLE_ENDIAN]  # as the PACS holds the NIST study: byte-identical files


def _server(pacs, tmp_path_factory: pytest.TempPathFactory, *, root_last: bool) -> Iterator[Server]:  # noqa: ANN001, F811
    work = tmp_path_factory.mktemp("consumer-ids")
    env = {
        "XDS_VAR_DIR": str(work / "var"),
        "DATABASE_URL": f"sqlite:///{work / 'xds.sqlite3'}",
        "XDS_IMAGING_SOURCE_ID": LOCATION_UID,
        "DICOM_AE_TITLE": pacs.ae_title,
        "DICOM_PACS": f"ORTHANC@127.0.0.1:{pacs.dicom_port}",
        "DICOMWEB_URL": pacs.dicomweb_url,
        "DICOM_FETCH_METHOD": "wado-rs",
        "XDS_RAD69_ROOT_LAST": "true" if root_last else "false",
    }
    with run_gunicorn(env, spool=work) as running:
        yield running


@pytest.fixture(scope="module")
def ids_root_last(pacs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: F811
    yield from _server(pacs, tmp_path_factory, root_last=True)


@pytest.fixture(scope="module")
def ids_root_first(pacs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: F811
    yield from _server(pacs, tmp_path_factory, root_last=False)


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    manifest = read_manifest(NIST_KOS)
    assert manifest.instance_count == 36 and {s.retrieve_location_uid for st in manifest.studies
                                              for s in st.series} == {LOCATION_UID}
    return manifest


@pytest.fixture(scope="module")
def originals(pacs, manifest: Manifest) -> dict[str, bytes]:  # noqa: F811
    """SOP Instance UID -> the instance's bytes as Orthanc stores them (its REST API)."""
    out = {}
    for _study, _series, instance, _ in manifest.instances():
        found = requests.post(f"{pacs.rest_url}/tools/lookup", data=instance.sop_instance_uid, timeout=30).json()
        assert found, f"{instance.sop_instance_uid} is not in the test PACS"
        out[instance.sop_instance_uid] = requests.get(f"{pacs.rest_url}/instances/{found[0]['ID']}/file",
                                                      timeout=30).content
    return out


@pytest.fixture
def proxy(ids_root_last: Server) -> Iterator[IdsProxy]:
    running = IdsProxy(_port(ids_root_last))
    yield running
    running.close()


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def resolver(url: str) -> Callable[[str], str]:
    def resolve(location_uid: str) -> str:
        if location_uid != LOCATION_UID:
            raise LookupError(f"no Imaging Document Source is known for Retrieve Location UID {location_uid}")
        return url
    return resolve


def retrieve(manifest: Manifest, root: Path, url: str, **kwargs: object) -> RetrievalReport:
    return retrieve_manifest(manifest, FilesDestination(root), resolve_imaging_source=resolver(url),
                             transfer_syntaxes=SYNTAXES, **kwargs)  # type: ignore[arg-type]


def stored(root: Path) -> dict[str, bytes]:
    """SOP Instance UID -> bytes of every file under ``root`` (any temp file would show up too)."""
    return {p.name.removesuffix(".dcm"): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def path_of(root: Path, manifest: Manifest, sop_uid: str) -> Path:
    for study, series, instance, _ in manifest.instances():
        if instance.sop_instance_uid == sop_uid:
            return root / study / series / f"{sop_uid}.dcm"
    raise KeyError(sop_uid)


def sha1s(files: dict[str, bytes]) -> dict[str, str]:
    return {uid: hashlib.sha1(data).hexdigest() for uid, data in files.items()}


# ----------------------------------------------------------------------------- the whole study

@pytest.mark.parametrize("ids", ["ids_root_last", "ids_root_first"])
def test_the_nist_manifest_arrives_byte_identical_in_both_root_orders(
        ids: str, request: pytest.FixtureRequest, manifest: Manifest, originals: dict[str, bytes],
        tmp_path: Path) -> None:
    server: Server = request.getfixturevalue(ids)
    events: list[ProgressEvent] = []

    report = retrieve(manifest, tmp_path, server.endpoint("imaging-source"), progress=events.append)

    assert report.ok, report.errors
    assert not report.partial and not report.failed
    assert sha1s(stored(tmp_path)) == sha1s(originals)
    assert (report.requested, report.retrieved, report.already_present, report.failed_count) == (36, 36, 0, 0)
    assert [(s.series_instance_uid, s.requested, s.retrieved, s.attempts, s.status) for s in report.series] == [
        (se.series_instance_uid, len(se.instances), len(se.instances), 1, ResponseStatus.SUCCESS.value)
        for st in manifest.studies for se in st.series]
    assert [(s.study_instance_uid, s.requested, s.retrieved) for s in report.studies()] == [(NIST_STUDY_UID, 36, 36)]
    assert report.bytes == sum(len(data) for data in originals.values())
    assert report.seconds > 0
    assert sum(e.kind == "instance" for e in events) == 36 and sum(e.kind == "series" for e in events) == 2
    for sop_uid in originals:
        assert path_of(tmp_path, manifest, sop_uid).is_file()


def test_one_rad69_request_per_series_naming_the_location_and_the_instances(
        proxy: IdsProxy, manifest: Manifest, tmp_path: Path) -> None:
    report = retrieve(manifest, tmp_path, proxy.url)

    assert report.ok, report.errors
    assert proxy.requests == [[i.sop_instance_uid for i in se.instances] for st in manifest.studies
                              for se in st.series]


# ----------------------------------------------------------------------------- resumable

def test_a_rerun_fetches_only_the_instances_missing_from_the_destination(
        proxy: IdsProxy, manifest: Manifest, originals: dict[str, bytes], tmp_path: Path) -> None:
    assert retrieve(manifest, tmp_path, proxy.url).ok
    gone = [manifest.studies[0].series[0].instances[3].sop_instance_uid,
            manifest.studies[0].series[1].instances[0].sop_instance_uid,
            manifest.studies[0].series[1].instances[7].sop_instance_uid]
    path_of(tmp_path, manifest, gone[0]).unlink()
    path_of(tmp_path, manifest, gone[1]).unlink()
    path_of(tmp_path, manifest, gone[2]).write_bytes(originals[gone[2]][:5000])  # truncated: not "has"
    proxy.requests.clear()

    report = retrieve(manifest, tmp_path, proxy.url)

    assert report.ok, report.errors
    assert sorted(proxy.requested_uids) == sorted(gone)
    assert len(proxy.requests) == 2  # one per series
    assert (report.retrieved, report.already_present) == (3, 33)
    assert sha1s(stored(tmp_path)) == sha1s(originals)

    proxy.requests.clear()
    again = retrieve(manifest, tmp_path, proxy.url)
    assert again.ok and again.already_present == 36 and proxy.requests == []


# ----------------------------------------------------------------------------- errors the IDS reports

def test_an_unknown_retrieve_location_uid_is_reported_naming_it_and_the_other_series_still_arrive(
        ids_root_last: Server, manifest: Manifest, tmp_path: Path) -> None:
    changed = copy.deepcopy(manifest)
    elsewhere = changed.studies[0].series[0]
    elsewhere.retrieve_location_uid = "1.2.3.4.999"

    report = retrieve(changed, tmp_path, ids_root_last.endpoint("imaging-source"))

    assert report.partial and not report.ok
    [error] = report.errors
    assert error.code == "XDSUnknownRepositoryId" and error.location == "1.2.3.4.999"
    assert "1.2.3.4.999" in error.text and elsewhere.series_instance_uid in error.text
    assert [(s.failed, s.retrieved) for s in report.series] == [(16, 0), (0, 20)]
    assert len(stored(tmp_path)) == 20


def test_an_instance_unknown_to_the_ids_is_a_partial_success_the_rest_written(
        ids_root_first: Server, manifest: Manifest, originals: dict[str, bytes], tmp_path: Path) -> None:
    changed = copy.deepcopy(manifest)
    series = changed.studies[0].series[1]
    ghost = "1.2.826.0.1.3680043.8.498.99999999999"
    series.instances.insert(5, ManifestInstance(series.instances[0].sop_class_uid, ghost))

    report = retrieve(changed, tmp_path, ids_root_first.endpoint("imaging-source"))

    assert report.partial
    assert report.series[1].status == ResponseStatus.PARTIAL_SUCCESS.value
    assert [(e.code, e.location) for e in report.errors] == [("XDSDocumentUniqueIdError", ghost)]
    assert (report.series[1].requested, report.series[1].retrieved, report.series[1].failed) == (21, 20, 1)
    assert sha1s(stored(tmp_path)) == sha1s(originals)


# ----------------------------------------------------------------------------- transport faults

def test_a_connection_dropped_mid_stream_keeps_what_came_and_the_next_run_completes_it(
        ids_root_last: Server, manifest: Manifest, originals: dict[str, bytes], tmp_path: Path) -> None:
    cutting = CuttingProxy(_port(ids_root_last), cut_after=700_000)  # ~5 of the first series' 16 instances
    try:
        report = retrieve(manifest, tmp_path, cutting.url, max_attempts=1)
    finally:
        cutting.close()

    first = report.series[0]
    assert report.partial
    assert 0 < first.retrieved < 16 and first.failed == 16 - first.retrieved and first.attempts == 1
    assert report.series[1].retrieved == 20
    assert [e.code for e in report.errors] == [TRANSPORT_ERROR]
    kept = stored(tmp_path)
    assert len(kept) == first.retrieved + 20
    assert all(originals[uid] == data for uid, data in kept.items())  # nothing half-written

    counting = IdsProxy(_port(ids_root_last))
    try:
        again = retrieve(manifest, tmp_path, counting.url)
    finally:
        counting.close()
    assert again.ok, again.errors
    assert (again.retrieved, again.already_present) == (16 - first.retrieved, first.retrieved + 20)
    assert sorted(counting.requested_uids) == sorted(set(originals) - set(kept))
    assert sha1s(stored(tmp_path)) == sha1s(originals)


def test_a_dropped_connection_is_retried_with_only_the_missing_instances(
        ids_root_first: Server, manifest: Manifest, originals: dict[str, bytes], tmp_path: Path) -> None:
    cutting = CuttingProxy(_port(ids_root_first), cut_after=700_000)
    events: list[ProgressEvent] = []
    try:
        report = retrieve(manifest, tmp_path, cutting.url, max_attempts=3, backoff=0.05, progress=events.append)
    finally:
        cutting.close()

    assert report.ok, report.errors
    assert report.series[0].attempts == 2 and report.series[1].attempts == 1
    first_request, retry = cutting.requests[0], cutting.requests[1]
    assert len(first_request) == 16 and 0 < len(retry) < 16 and set(retry) < set(first_request)
    assert [e.kind for e in events].count("retry") == 1
    assert sha1s(stored(tmp_path)) == sha1s(originals)


def test_transport_failures_give_up_after_max_attempts(manifest: Manifest, tmp_path: Path) -> None:
    with_nothing = IdsProxy(1)  # its upstream refuses: every exchange fails at once
    try:
        report = retrieve(manifest, tmp_path, with_nothing.url, max_attempts=2, backoff=0.01)
    finally:
        with_nothing.close()

    assert report.failed and not report.partial
    assert [s.attempts for s in report.series] == [2, 2]
    assert [e.code for e in report.errors] == [TRANSPORT_ERROR, TRANSPORT_ERROR]
    assert "after 2 attempt(s)" in report.errors[0].text
    assert stored(tmp_path) == {}


# ----------------------------------------------------------------------------- bad content, bad disk

def test_a_corrupt_dicom_part_is_not_written_and_is_listed(
        ids_root_last: Server, manifest: Manifest, originals: dict[str, bytes], tmp_path: Path) -> None:
    corrupting = CorruptingProxy(_port(ids_root_last))
    try:
        report = retrieve(manifest, tmp_path, corrupting.url)
    finally:
        corrupting.close()

    assert report.partial
    [error] = report.errors
    assert error.code == "InvalidDocumentContent" and "Part 10" in error.text
    assert error.location in {i.sop_instance_uid for i in manifest.studies[0].series[0].instances}
    assert (report.series[0].retrieved, report.series[0].failed) == (15, 1)
    kept = stored(tmp_path)
    assert set(kept) == set(originals) - {error.location}
    assert all(originals[uid] == data for uid, data in kept.items())


@pytest.mark.parametrize("writers", [0, 2], ids=["inline", "writer-threads"])
def test_disk_full_at_the_writer_leaves_no_partial_file_and_is_reported(
        ids_root_last: Server, manifest: Manifest, originals: dict[str, bytes], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, writers: int) -> None:
    victim = manifest.studies[0].series[1].instances[2].sop_instance_uid
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        if f".{victim}." in os.readlink(f"/proc/self/fd/{fd}"):
            real_write(fd, bytes(data)[:1000])  # some bytes reach the temp file, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    report = retrieve_manifest(manifest, FilesDestination(tmp_path, writers=writers),
                               resolve_imaging_source=resolver(ids_root_last.endpoint("imaging-source")),
                               transfer_syntaxes=SYNTAXES)
    monkeypatch.undo()

    assert report.partial
    [error] = report.errors
    assert (error.code, error.location) == (DESTINATION_ERROR, victim)
    assert "ENOSPC" in error.text
    kept = stored(tmp_path)
    assert set(kept) == set(originals) - {victim}  # no temp file, no partial instance
    assert (report.series[1].retrieved, report.series[1].failed) == (19, 1)
    assert not FilesDestination(tmp_path).has(InstanceRef(NIST_STUDY_UID, manifest.studies[0].series[1]
                                                          .series_instance_uid, victim,
                                                          manifest.studies[0].series[1].instances[2].sop_class_uid))


def test_unusable_arguments_are_refused_before_any_request(manifest: Manifest, tmp_path: Path) -> None:
    for kwargs, message in (({"transfer_syntaxes": []}, "TransferSyntaxUIDList"),
                            ({"transfer_syntaxes": ["1.2.x"]}, "not a DICOM UID"),
                            ({"transfer_syntaxes": SYNTAXES, "max_attempts": 0}, "max_attempts")):
        with pytest.raises(RetrievalSetupError, match=message):
            retrieve_manifest(manifest, FilesDestination(tmp_path), resolve_imaging_source=resolver("http://x"),
                              **kwargs)  # type: ignore[arg-type]
    assert stored(tmp_path) == {}


def test_each_rad69_exchange_is_audited_on_the_consumer_side(
        ids_root_first: Server, manifest: Manifest, tmp_path: Path) -> None:
    """One DICOM Instances Transferred event per series request (DICOM PS3.15 A.5.3.7), requestor side,
    naming the study and the instances asked for, with the answer's outcome."""
    from xds_core import audit

    with audit.capture() as events:
        report = retrieve(manifest, tmp_path, ids_root_first.endpoint("imaging-source"))
    assert report.ok
    rad69 = [e for e in events if e.transaction is audit.Transaction.RAD_69]
    assert len(rad69) == len(report.series) == 2
    for event, series in zip(rad69, [se for st in manifest.studies for se in st.series], strict=True):
        assert event.event_id is audit.EventId.DICOM_INSTANCES_TRANSFERRED
        assert event.outcome is audit.EventOutcome.SUCCESS
        (study,) = [o for o in event.objects if o.object_id == NIST_STUDY_UID]
        assert set(study.instances) == {i.sop_instance_uid for i in series.instances}
        # Instances flow from the Imaging Document Source (Source) to us (Destination, the requestor).
        source = event.participant(audit.ParticipantRole.SOURCE)
        destination = event.participant(audit.ParticipantRole.DESTINATION)
        assert source is not None and destination is not None
        assert source.user_id == ids_root_first.endpoint("imaging-source") and destination.is_requestor


def test_a_destination_that_knows_a_whole_series_is_asked_once_per_series(
        proxy: IdsProxy, manifest: Manifest, tmp_path: Path) -> None:
    """A PACS destination answers for a whole series (one C-FIND / QIDO-RS), not once per instance."""
    class SeriesFiles(FilesDestination):
        def __init__(self, root: Path) -> None:
            super().__init__(root)
            self.series_asked: list[str] = []
            self.instances_asked = 0

        def series_present(self, study_uid: str, series_uid: str) -> dict[str, str]:
            self.series_asked.append(series_uid)
            held = {}
            for study in manifest.studies:
                for series in study.series:
                    for instance in series.instances:
                        ref = InstanceRef(study.study_instance_uid, series.series_instance_uid,
                                          instance.sop_instance_uid, instance.sop_class_uid)
                        if series.series_instance_uid == series_uid and super().has(ref):
                            held[ref.sop_instance_uid] = ref.sop_class_uid
            return held

        def has(self, ref: InstanceRef) -> bool:
            self.instances_asked += 1
            return super().has(ref)

    assert retrieve(manifest, tmp_path, proxy.url).retrieved == 36
    again = SeriesFiles(tmp_path)
    report = retrieve_manifest(manifest, again, resolve_imaging_source=resolver(proxy.url), transfer_syntaxes=SYNTAXES)
    assert (report.already_present, report.retrieved) == (36, 0)
    assert sorted(again.series_asked) == sorted(s.series_instance_uid for st in manifest.studies for s in st.series)
    assert again.instances_asked == 0
