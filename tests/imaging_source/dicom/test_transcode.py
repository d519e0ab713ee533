"""Transfer syntax choice and transcoding with pydicom's codecs (no PACS needed)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from imaging_source.dicom.transcode import (
    TargetChoice,
    TranscodeError,
    choose_target,
    has_encapsulated_pixel_data,
    known_transfer_syntax,
    pacs_transfer_syntax,
    transcode,
)

#: Our consumer's ``--compress`` list, most preferred first.
COMPRESSED_FIRST = [JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1, ExplicitVRLittleEndian, ImplicitVRLittleEndian]
#: A syntax pydicom knows but cannot decode (no plugin for JPEG XL here).
UNDECODABLE = "1.2.840.10008.1.2.4.110"


def _bytes(name: str) -> bytes:
    return open(get_testdata_file(name), "rb").read()


def _parse(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def test_stored_syntax_is_kept_when_requested() -> None:
    assert choose_target(ExplicitVRLittleEndian, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]) == \
        ExplicitVRLittleEndian
    assert choose_target(JPEGBaseline8Bit, [JPEGBaseline8Bit]) == JPEGBaseline8Bit


@pytest.mark.parametrize(("source", "requested", "has_pixels", "expected"), [
    # The consumer's order is honoured: compression first beats the stored syntax further down the list.
    (ExplicitVRLittleEndian, COMPRESSED_FIRST, None, JPEGLSLossless),
    (ExplicitVRLittleEndian, COMPRESSED_FIRST, True, JPEGLSLossless),
    (ImplicitVRLittleEndian, COMPRESSED_FIRST, True, JPEGLSLossless),
    (ExplicitVRLittleEndian, [JPEG2000Lossless, JPEGLSLossless], True, JPEG2000Lossless),
    (ExplicitVRLittleEndian, [JPEGLosslessSV1, JPEGLSLossless], True, JPEGLSLossless),  # no SV1 encoder: next
    # Already in the most preferred syntax: passed through, whatever else follows.
    (JPEGLSLossless, COMPRESSED_FIRST, None, JPEGLSLossless),
    (JPEG2000Lossless, COMPRESSED_FIRST, True, JPEGLSLossless),  # ... but not when a better one is producible
    (JPEGBaseline8Bit, [JPEGBaseline8Bit, ExplicitVRLittleEndian], True, JPEGBaseline8Bit),
    (JPEGBaseline8Bit, [ExplicitVRLittleEndian, JPEGBaseline8Bit], True, ExplicitVRLittleEndian),
    # Uncompressed syntaxes are equivalent: no Implicit <-> Explicit rewrite when the source is asked for too.
    (ExplicitVRLittleEndian, [ImplicitVRLittleEndian, ExplicitVRLittleEndian], None, ExplicitVRLittleEndian),
    (ImplicitVRLittleEndian, [ExplicitVRLittleEndian, ImplicitVRLittleEndian], True, ImplicitVRLittleEndian),
    (ExplicitVRLittleEndian, [ImplicitVRLittleEndian], True, ImplicitVRLittleEndian),
    (DeflatedExplicitVRLittleEndian, [ExplicitVRLittleEndian], True, ExplicitVRLittleEndian),
    (ExplicitVRLittleEndian, [DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian], True, ExplicitVRLittleEndian),
    # Compressed source, native asked: decoded.
    (JPEGLSLossless, [ExplicitVRLittleEndian, ImplicitVRLittleEndian], True, ExplicitVRLittleEndian),
    # No pixel data (SR, KOS): compression is skipped, a native syntax (the source when asked) follows.
    (ExplicitVRLittleEndian, COMPRESSED_FIRST, False, ExplicitVRLittleEndian),
    (ImplicitVRLittleEndian, COMPRESSED_FIRST, False, ImplicitVRLittleEndian),
    (ExplicitVRLittleEndian, [JPEGLSLossless, ImplicitVRLittleEndian], False, ImplicitVRLittleEndian),
    (ExplicitVRLittleEndian, [JPEGLSLossless, RLELossless], False, None),
    # ... and a compressed label on one (a PACS "transcoding" a KOS) is not kept: nothing is compressed.
    (JPEGLSLossless, COMPRESSED_FIRST, False, ExplicitVRLittleEndian),
    (UNDECODABLE, [UNDECODABLE, ImplicitVRLittleEndian], False, ImplicitVRLittleEndian),
    # A source we cannot decode: only as is.
    (UNDECODABLE, COMPRESSED_FIRST, None, None),
    (UNDECODABLE, COMPRESSED_FIRST, True, None),
    (UNDECODABLE, [ExplicitVRLittleEndian, UNDECODABLE], True, UNDECODABLE),
    # Nothing fits.
    (ExplicitVRLittleEndian, [JPEGBaseline8Bit], True, None),
    (ExplicitVRLittleEndian, [], None, None),
])
def test_choose_target_walks_the_consumers_preference_order(source, requested, has_pixels, expected) -> None:
    assert choose_target(source, requested, has_pixels=has_pixels) == expected


def test_the_pacs_is_asked_for_the_most_preferred_syntax_only_when_it_is_a_lossless_compression() -> None:
    assert pacs_transfer_syntax(COMPRESSED_FIRST) == JPEGLSLossless
    assert pacs_transfer_syntax(["1.2.3.4", JPEGLosslessSV1, ExplicitVRLittleEndian]) == JPEGLosslessSV1
    assert pacs_transfer_syntax([ExplicitVRLittleEndian, JPEGLSLossless]) is None
    assert pacs_transfer_syntax([JPEGBaseline8Bit, JPEGLSLossless]) is None  # lossy first: as stored
    assert pacs_transfer_syntax([]) is None


def test_target_choice_passes_an_instance_in_the_chosen_syntax_through_without_parsing_it(tmp_path) -> None:
    choice = TargetChoice(COMPRESSED_FIRST)
    ct = _bytes("CT_small.dcm")
    jpeg_ls = transcode(ct, JPEGLSLossless)
    sr_relabelled = _relabel(_bytes("test-SR.dcm"), JPEGLSLossless)  # what Orthanc sends for an SR asked as JPEG-LS
    assert has_encapsulated_pixel_data(jpeg_ls) and has_encapsulated_pixel_data(memoryview(jpeg_ls))
    assert not has_encapsulated_pixel_data(sr_relabelled) and not has_encapsulated_pixel_data(ct)
    spilled = tmp_path / "spilled.dcm"
    spilled.write_bytes(jpeg_ls)
    assert has_encapsulated_pixel_data(spilled)
    assert choice.passes_through(JPEGLSLossless, memoryview(jpeg_ls))
    assert choice.passes_through(JPEGLSLossless, spilled)
    assert not choice.passes_through(JPEGLSLossless, sr_relabelled)  # parsed, then delivered uncompressed
    assert choice.final(JPEGLSLossless, _parse(sr_relabelled)) == ExplicitVRLittleEndian
    assert not choice.passes_through(ExplicitVRLittleEndian, ct)  # to be compressed
    assert choice.final(ExplicitVRLittleEndian, _parse(_bytes("test-SR.dcm"))) == ExplicitVRLittleEndian
    assert TargetChoice([ExplicitVRLittleEndian]).passes_through(ExplicitVRLittleEndian, ct)


def test_a_relabelled_instance_without_pixels_is_relabelled_back() -> None:
    out = _parse(transcode(_relabel(_bytes("test-SR.dcm"), JPEGLSLossless), ExplicitVRLittleEndian))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out == _parse(_bytes("test-SR.dcm"))


def _relabel(data: bytes, syntax: str) -> bytes:
    ds = _parse(data)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(syntax)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


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
