"""C-FIND (study / series / image levels) and QIDO-RS against the real Orthanc."""

from __future__ import annotations

import os
import subprocess

import pytest

from imaging_source.dicom.config import FetchMethod
from imaging_source.dicom.find import (
    CFindFinder,
    QidoFinder,
    date_range,
    find_studies,
    find_study,
    locate_instance,
    study_instance_counts,
)

from ..pacs_fixtures import NIST_SERIES, NIST_STUDY_UID

pytestmark = pytest.mark.pacs


@pytest.fixture(params=["c-find", "qido-rs"])
def config(request, pacs):
    return pacs.config(FetchMethod.C_GET, dicomweb=request.param == "qido-rs")


def test_find_study_returns_the_whole_hierarchy(config) -> None:
    study = find_study(NIST_STUDY_UID, config)

    assert study is not None
    assert study.study_instance_uid == NIST_STUDY_UID
    assert (study.patient_id, study.patient_name, study.accession_number) == ("IDS-DEPT002-a", "Multi^Mr^a", "IDC002-a")
    assert study.study_date == "20150202"
    assert sorted(s.series_instance_uid for s in study.series) == sorted(NIST_SERIES)
    assert {s.modality for s in study.series} == {"MR"}
    assert sorted(len(s.instances) for s in study.series) == [16, 20]
    assert all(i.sop_class_uid == "1.2.840.10008.5.1.4.1.1.4" for s in study.series for i in s.instances)
    numbers = [i.instance_number for i in study.series[0].instances]
    assert numbers == sorted(numbers)  # stable manifest order


def test_find_study_of_an_unknown_uid_is_none(config) -> None:
    assert find_study("1.2.3.4.5.6.7.8.9.404", config) is None


def test_find_studies_by_patient_and_date(config) -> None:
    assert find_studies("IDS-DEPT002-a", config=config) == [NIST_STUDY_UID]
    assert find_studies("IDS-DEPT002-a", since="2015-02-02", config=config) == [NIST_STUDY_UID]
    assert find_studies("IDS-DEPT002-a", since="20150203", config=config) == []
    assert NIST_STUDY_UID in find_studies(config=config)
    assert study_instance_counts(config, "IDS-DEPT002-a") == {NIST_STUDY_UID: 36}


def test_locate_instance_tells_where_an_instance_is(config) -> None:
    study = find_study(NIST_STUDY_UID, config)
    sop = study.series[1].instances[3].sop_instance_uid
    assert locate_instance(sop, config) == (NIST_STUDY_UID, study.series[1].series_instance_uid)
    assert locate_instance("1.2.3.4.5.6.7.8.9.404", config) is None


def test_c_find_answers_match_dcmtk_findscu(pacs) -> None:
    """An independent DICOM peer (dcmtk findscu) sees the same image-level answers as our C-FIND."""
    config = pacs.config()
    ours = {i.sop_instance_uid for s in CFindFinder(config).find_study(NIST_STUDY_UID).series for i in s.instances}
    run = subprocess.run(
        ["findscu", "-S", "-aet", pacs.ae_title, "-aec", "ORTHANC", "-k", "QueryRetrieveLevel=IMAGE",
         "-k", f"StudyInstanceUID={NIST_STUDY_UID}", "-k", f"SeriesInstanceUID={NIST_SERIES[0]}",
         "-k", "SOPInstanceUID", "127.0.0.1", str(pacs.dicom_port)],
        env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    theirs = {line.split("[")[1].split("]")[0].rstrip("\x00 ")
              for line in run.stderr.splitlines() if "(0008,0018)" in line}
    assert len(theirs) == 20 and theirs <= ours


def test_qido_and_c_find_agree(pacs) -> None:
    a = CFindFinder(pacs.config()).find_study(NIST_STUDY_UID)
    b = QidoFinder(pacs.config(dicomweb=True)).find_study(NIST_STUDY_UID)
    assert a.instance_set_hash() == b.instance_set_hash()
    assert (a.patient_id, a.study_date, a.accession_number) == (b.patient_id, b.study_date, b.accession_number)


def test_date_range_accepts_iso_and_dicom_dates() -> None:
    import datetime as dt

    assert date_range(dt.date(2024, 5, 6)) == "20240506-"
    assert date_range("2024-05-06") == "20240506-"
    assert date_range(None) == ""
    with pytest.raises(ValueError):
        date_range("May 6")


def test_the_issuer_of_patient_id_comes_back_from_both_query_paths(config, pacs) -> None:  # type: ignore[no-untyped-def]
    """Regression: QIDO-RS sent includefield as one comma list (%2C on the wire), which Orthanc does not
    split, so the study came back without Issuer of Patient ID and a patient mapped with its issuer was
    not mapped at all (publication queued it for reconciliation)."""
    import copy
    import io

    import requests
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    from demo.studies import stow_body

    ds = dcmread(get_testdata_file("CT_small.dcm"))
    ds = copy.deepcopy(ds)
    ds.PatientID, ds.IssuerOfPatientID = "ISSUED-1", "1.2.826.0.1.3680043.10.1042"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    body, content_type = stow_body([buffer.getvalue()])
    requests.post(f"{pacs.dicomweb_url}/studies", data=body, headers={"Content-Type": content_type},
                  timeout=60).raise_for_status()
    try:
        study = find_study(ds.StudyInstanceUID, config)
        assert study is not None
        assert (study.patient_id, study.issuer_of_patient_id) == ("ISSUED-1", "1.2.826.0.1.3680043.10.1042")
    finally:
        (orthanc_id,) = requests.post(f"{pacs.rest_url}/tools/lookup", data=ds.StudyInstanceUID, timeout=30).json()
        requests.delete(f"{pacs.rest_url}/studies/{orthanc_id['ID']}", timeout=30).raise_for_status()
