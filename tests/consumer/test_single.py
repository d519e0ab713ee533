"""One instance by RAD-69 into memory (the thumbnail's fetch): the real imaging source in front of the test
PACS (marked ``pacs``), and the refusals that need no source at all."""

from __future__ import annotations

import io

import pydicom
import pytest

from consumer.fetch import transfer_syntaxes
from consumer.single import SingleRetrieveError, retrieve_instance
from kos.reader import read_manifest
from tests.consumer.conftest import LOCATION_UID, NIST_STUDY, kos_part10, new_oid
from tests.gunicorn_server import Server
from xds_core import audit


def nist_instance(index: int = 0) -> tuple[str, str, str]:
    """(series UID, SOP Instance UID, SOP Class UID) of one instance of the NIST study's manifest."""
    _study, series, instance, _ = read_manifest(kos_part10(new_oid())).instances()[index]
    return series, instance.sop_instance_uid, instance.sop_class_uid


@pytest.mark.parametrize(("field", "value"), [
    ("study_uid", "../../etc"), ("series_uid", "1.2.03"), ("sop_instance_uid", "1" * 65),
    ("location_uid", "3.1.2"),
])
def test_hostile_uids_are_refused_before_anything_is_sent(field: str, value: str) -> None:
    arguments = {"study_uid": NIST_STUDY, "series_uid": "1.2.3", "sop_instance_uid": "1.2.4",
                 "location_uid": LOCATION_UID, field: value}
    with audit.capture() as events, pytest.raises(SingleRetrieveError, match="not a DICOM UID|not an OID"):
        retrieve_instance("http://127.0.0.1:9/nowhere", transfer_syntaxes=["1.2.840.10008.1.2.1"], **arguments)
    assert events == []


def test_an_unreachable_source_is_an_error_naming_the_url() -> None:
    with pytest.raises(SingleRetrieveError, match="127.0.0.1:9"):
        retrieve_instance("http://127.0.0.1:9/xds/imaging-source", study_uid=NIST_STUDY, series_uid="1.2.3",
                          sop_instance_uid="1.2.4", location_uid=LOCATION_UID,
                          transfer_syntaxes=["1.2.840.10008.1.2.1"], timeout=5)


@pytest.mark.pacs
def test_one_instance_comes_back_whole_and_audited(ids: Server) -> None:
    series, sop, sop_class = nist_instance(5)
    with audit.capture() as events:
        data = retrieve_instance(ids.endpoint("imaging-source"), study_uid=NIST_STUDY, series_uid=series,
                                 sop_instance_uid=sop, location_uid=LOCATION_UID, sop_class_uid=sop_class,
                                 transfer_syntaxes=transfer_syntaxes(compress=True))
    ds = pydicom.dcmread(io.BytesIO(data))
    assert (ds.SOPInstanceUID, ds.SOPClassUID, ds.SeriesInstanceUID) == (sop, sop_class, series)
    assert "PixelData" in ds
    (event,) = [e for e in events if e.transaction == audit.Transaction.RAD_69]
    assert event.outcome == audit.EventOutcome.SUCCESS


@pytest.mark.pacs
def test_an_instance_the_source_does_not_hold_is_an_error_not_an_empty_image(ids: Server) -> None:
    series, _sop, _ = nist_instance()
    missing = new_oid()
    with pytest.raises(SingleRetrieveError, match=missing):
        retrieve_instance(ids.endpoint("imaging-source"), study_uid=NIST_STUDY, series_uid=series,
                          sop_instance_uid=missing, location_uid=LOCATION_UID,
                          transfer_syntaxes=transfer_syntaxes(compress=False))


@pytest.mark.pacs
def test_an_answer_over_the_size_cap_is_refused(ids: Server) -> None:
    series, sop, _ = nist_instance()
    with pytest.raises(SingleRetrieveError):
        retrieve_instance(ids.endpoint("imaging-source"), study_uid=NIST_STUDY, series_uid=series,
                          sop_instance_uid=sop, location_uid=LOCATION_UID,
                          transfer_syntaxes=transfer_syntaxes(compress=False), max_size=10_000)
