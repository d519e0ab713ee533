"""Transfer syntax choice and transcoding with pydicom's codecs (no PACS needed)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from imaging_source.dicom.transcode import TranscodeError, choose_target, known_transfer_syntax, transcode


def _bytes(name: str) -> bytes:
    return open(get_testdata_file(name), "rb").read()


def _parse(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def test_stored_syntax_is_kept_when_requested() -> None:
    assert choose_target(ExplicitVRLittleEndian, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]) == \
        ExplicitVRLittleEndian
    assert choose_target(JPEGBaseline8Bit, [JPEGBaseline8Bit]) == JPEGBaseline8Bit


def test_first_producible_requested_syntax_is_chosen() -> None:
    assert choose_target(ExplicitVRLittleEndian, [JPEGBaseline8Bit, JPEG2000Lossless]) == JPEG2000Lossless
    assert choose_target(ExplicitVRLittleEndian, [JPEGBaseline8Bit]) is None  # no JPEG encoder in pydicom 3
    assert choose_target(ExplicitVRLittleEndian, [RLELossless], has_pixels=False) is None


@pytest.mark.parametrize(("source", "target"), [(ExplicitVRLittleEndian, ImplicitVRLittleEndian),
                                                 (ImplicitVRLittleEndian, ExplicitVRLittleEndian)])
def test_explicit_and_implicit_little_endian_round_trip(source, target) -> None:
    original = _parse(_bytes("CT_small.dcm"))
    start = transcode(_bytes("CT_small.dcm"), source) if source != ExplicitVRLittleEndian else _bytes("CT_small.dcm")
    out = _parse(transcode(start, target))
    assert out.file_meta.TransferSyntaxUID == target
    assert out.SOPInstanceUID == original.SOPInstanceUID and out.PatientName == original.PatientName
    assert np.array_equal(out.pixel_array, original.pixel_array)


@pytest.mark.parametrize("target", [JPEG2000Lossless, JPEGLSLossless, RLELossless])
def test_lossless_compression_keeps_every_pixel(target) -> None:
    original = _parse(_bytes("CT_small.dcm"))
    out = _parse(transcode(_bytes("CT_small.dcm"), target))
    assert out.file_meta.TransferSyntaxUID == target
    assert out.SOPInstanceUID == original.SOPInstanceUID  # same instance, not a new one
    assert np.array_equal(out.pixel_array, original.pixel_array)


def test_jpeg_baseline_source_is_decompressed_for_a_native_target() -> None:
    out = _parse(transcode(_bytes("examples_ybr_color.dcm"), ExplicitVRLittleEndian))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.pixel_array.shape[-1] == 3 and out.PhotometricInterpretation == "RGB"


def test_impossible_targets_raise() -> None:
    with pytest.raises(TranscodeError):
        transcode(_bytes("CT_small.dcm"), JPEGBaseline8Bit)
    with pytest.raises(TranscodeError):
        transcode(_bytes("test-SR.dcm"), JPEG2000Lossless)  # no pixel data to compress


def test_known_transfer_syntax() -> None:
    assert known_transfer_syntax("1.2.840.10008.1.2.4.70")
    assert not known_transfer_syntax("1.2.3.4")
    assert not known_transfer_syntax("")
