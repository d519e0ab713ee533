"""RAD-55 WADO Retrieve (WADO-URI) from our Imaging Document Source, against the real Orthanc.

Through Django's test client on the real URL; cases after the NIST IDS tests ids_4805 (one
image, contentType=application/dicom) and ids_4809 (exception cases -> HTTP 404).
"""

from __future__ import annotations

import io

import pydicom
import pytest
from django.test import Client
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .pacs_fixtures import NIST_STUDY_UID
from .test_retrieve_imaging_document_set import nist, source  # noqa: F401 - fixtures

pytestmark = [pytest.mark.pacs, pytest.mark.django_db]

URL = "/xds/imaging-source/wado"


def _get(**params: str) -> object:
    return Client().get(URL, {"requestType": "WADO", "contentType": "application/dicom", **params})


def test_one_image_is_returned_as_dicom_with_its_identity_unchanged(source, nist) -> None:  # noqa: F811
    series = nist.series[0]
    sop = series.instances[0].sop_instance_uid
    response = _get(studyUID=NIST_STUDY_UID, seriesUID=series.series_instance_uid, objectUID=sop)
    assert response.status_code == 200 and response["Content-Type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(response.content))
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (
        NIST_STUDY_UID, series.series_instance_uid, sop)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian  # PS3.18 default

    implicit = _get(studyUID=NIST_STUDY_UID, seriesUID=series.series_instance_uid, objectUID=sop,
                    transferSyntax=ImplicitVRLittleEndian)
    assert implicit.status_code == 200
    assert pydicom.dcmread(io.BytesIO(implicit.content)).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian


def test_an_object_not_where_the_request_says_is_not_found(source, nist) -> None:  # noqa: F811
    series = nist.series[0]
    sop = series.instances[0].sop_instance_uid
    not_found = {
        "ids_4809 case 1 unknown object": (NIST_STUDY_UID, series.series_instance_uid, sop + ".999"),
        "ids_4809 case 2 wrong series": (NIST_STUDY_UID, nist.series[1].series_instance_uid, sop),
        "ids_4809 case 3 wrong study": ("1.2.3.4.5.999", series.series_instance_uid, sop),
        "ids_4809 case 4 empty study": ("", series.series_instance_uid, sop),
        "ids_4809 case 5 empty series": (NIST_STUDY_UID, "", sop),
        "ids_4809 case 6 empty study and series": ("", "", sop),
    }
    for name, (study, series_uid, object_uid) in not_found.items():
        response = _get(studyUID=study, seriesUID=series_uid, objectUID=object_uid)
        assert response.status_code == 404, name


def test_requests_we_cannot_serve_are_refused_with_their_http_status(nist) -> None:  # noqa: F811
    series = nist.series[0]
    uids = {"studyUID": NIST_STUDY_UID, "seriesUID": series.series_instance_uid,
            "objectUID": series.instances[0].sop_instance_uid}
    assert Client().get(URL, {"requestType": "NOTWADO", "contentType": "application/dicom", **uids}).status_code == 400
    assert Client().get(URL, {"requestType": "WADO", **uids}).status_code == 406  # default image/jpeg: not rendered
    assert _get(transferSyntax="1.2.840.10008.1.2.4.999", **uids).status_code == 406
    assert Client().post(URL, {"requestType": "WADO", **uids}).status_code == 405
