"""Thumbnails of DICOM images (imaging_source.rendering).

Real Part 10 objects: built with pydicom here (compressed with pydicom 3's own encoders and the
installed plugins) or pydicom's bundled test files read straight from the installed package (only
files on disk; never ``get_testdata_file``, which may download).  Every PNG is decoded with Pillow.
"""

from __future__ import annotations

import copy
import io
import random
import statistics
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from imaging_source.management.commands.xds_bench_render import synthetic_ct
from imaging_source.rendering import MAX_FRAME_PIXELS, RenderError, Thumbnail, render_thumbnail

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
SECRET_NAME, SECRET_ID = "Secretname^Patient", "SECRET-PID-4711"


def image(pixels: np.ndarray, photometric: str = "MONOCHROME2", *, bits_stored: int | None = None,
          **attributes: object) -> Dataset:
    """A Secondary Capture-like dataset holding ``pixels`` (frames first when 3-D monochrome / 4-D colour)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID = SECRET_NAME, SECRET_ID
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "OT", 7, "Test series"
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8, generate_instance_uid=False)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def part10(ds: Dataset, syntax: str | None = None, **compress: object) -> bytes:
    ds = copy.deepcopy(ds)
    if syntax in (JPEGLSLossless, JPEG2000Lossless, RLELossless, JPEGLSNearLossless, JPEG2000):
        ds.compress(syntax, generate_instance_uid=False, **compress)
    elif syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def pixels_of(thumbnail: Thumbnail) -> np.ndarray:
    png = Image.open(io.BytesIO(thumbnail.png))
    assert png.format == "PNG" and png.size == (thumbnail.width, thumbnail.height)
    return np.asarray(png).astype(np.int16)


def ramp(rows: int = 64, columns: int = 64, top: int = 4095) -> np.ndarray:
    """A left-to-right ramp, unsigned 16 bit."""
    return np.tile(np.linspace(0, top, columns).astype(np.uint16), (rows, 1))


def ct(hu: np.ndarray, **attributes: object) -> Dataset:
    """A CT-like image: stored = HU + 1024, Rescale Intercept -1024 (PS3.3 C.11.1)."""
    return image(np.clip(hu + 1024, 0, 4095).astype(np.uint16), bits_stored=12, Modality="CT",
                 RescaleIntercept=-1024, RescaleSlope=1, **attributes)


# ---------------------------------------------------------------- geometry and description


def test_png_fits_the_box_keeping_the_aspect_ratio_and_describes_the_source() -> None:
    ds = image(ramp(200, 400))
    thumbnail = render_thumbnail(part10(ds), size=128)
    assert (thumbnail.width, thumbnail.height) == (128, 64)
    png = Image.open(io.BytesIO(thumbnail.png))
    assert png.mode == "L" and png.size == (128, 64)
    assert (thumbnail.rows, thumbnail.columns, thumbnail.frames, thumbnail.frame) == (200, 400, 1, 0)
    assert (thumbnail.photometric, thumbnail.modality, thumbnail.series_description) == ("MONOCHROME2", "OT",
                                                                                         "Test series")
    assert thumbnail.series_number == 7
    assert thumbnail.sop_instance_uid == ds.SOPInstanceUID
    assert thumbnail.transfer_syntax_uid == ExplicitVRLittleEndian


def test_tall_images_fit_by_their_height() -> None:
    thumbnail = render_thumbnail(part10(image(ramp(300, 100))), size=90)
    assert (thumbnail.width, thumbnail.height) == (30, 90)


def test_small_images_are_not_enlarged() -> None:
    thumbnail = render_thumbnail(part10(image(ramp(20, 30))), size=128)
    assert (thumbnail.width, thumbnail.height) == (30, 20)


def test_a_path_renders_like_the_same_bytes(tmp_path: Path) -> None:
    data = part10(image(ramp()))
    path = tmp_path / "image.dcm"
    path.write_bytes(data)
    assert render_thumbnail(path).png == render_thumbnail(data).png


def test_a_missing_series_number_is_none() -> None:
    ds = image(ramp())
    del ds.SeriesNumber
    assert render_thumbnail(part10(ds)).series_number is None


# ---------------------------------------------------------------- grey scale pipeline (PS3.3 C.11)


@pytest.mark.parametrize("window", [{"WindowCenter": 2000, "WindowWidth": 1000}, {}], ids=["window", "no-window"])
def test_monochrome1_renders_inverted_relative_to_monochrome2(window: dict[str, int]) -> None:
    pixels = ramp()
    mono2 = pixels_of(render_thumbnail(part10(image(pixels, **window))))
    mono1 = pixels_of(render_thumbnail(part10(image(pixels, "MONOCHROME1", **window))))
    assert mono2[:, 0].max() < 10 and mono2[:, -1].min() > 245  # the ramp goes dark to light ...
    assert np.array_equal(mono1, 255 - mono2)  # ... and the other way round as MONOCHROME1


def bands(values: list[int], width: int = 16, rows: int = 16) -> np.ndarray:
    return np.repeat(np.array(values, dtype=np.float32), width)[None, :].repeat(rows, axis=0)


def test_window_center_and_width_map_hounsfield_units_after_the_rescale() -> None:
    hu = bands([-1000, -160, 40, 240, 1000])
    grey = pixels_of(render_thumbnail(part10(ct(hu, WindowCenter=40, WindowWidth=400))))[0, ::16]
    assert grey[0] == 0 and grey[1] <= 1  # at or below the window's bottom (C.11.2.1.2.1)
    assert abs(int(grey[2]) - 128) <= 1  # the centre is mid grey
    assert grey[3] >= 254 and grey[4] == 255


def test_the_first_of_several_windows_is_used() -> None:
    hu = bands([-160, 40, 240])
    grey = pixels_of(render_thumbnail(part10(ct(hu, WindowCenter=[40, 500], WindowWidth=[400, 2000]))))[0, ::16]
    assert grey[0] <= 1 and abs(int(grey[1]) - 128) <= 1 and grey[2] >= 254


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_every_voi_lut_function_puts_the_centre_at_mid_grey(function: str) -> None:
    hu = bands([-1000, 40, 1000])
    grey = pixels_of(render_thumbnail(part10(ct(hu, WindowCenter=40, WindowWidth=400, VOILUTFunction=function))))
    assert grey[0, 0] <= 5 and abs(int(grey[0, 16]) - 128) <= 1 and grey[0, 32] >= 250


def test_a_ct_without_a_window_is_stretched_not_black() -> None:
    rng = np.random.default_rng(3)
    hu = rng.normal(40, 30, (64, 64)).astype(np.float32)  # soft tissue, nothing near air or bone
    grey = pixels_of(render_thumbnail(part10(ct(hu))))
    assert 100 < grey.mean() < 155 and grey.min() <= 5 and grey.max() >= 250


def test_pixel_padding_does_not_squeeze_the_grey_range() -> None:
    """PS3.3 C.7.5.1.1.2: padding (outside the field of view) is not part of the image's range."""
    rng = np.random.default_rng(4)
    hu = rng.normal(40, 30, (64, 64)).astype(np.float32)
    hu[:, :24] = -3024  # a third of the image is padding, stored 0
    grey = pixels_of(render_thumbnail(part10(ct(hu, PixelPaddingValue=0))))
    body = grey[:, 24:]
    assert body.min() <= 5 and body.max() >= 250  # the body uses the whole grey scale


@pytest.mark.parametrize(("center", "width"), [(b"abc", b"400"), (b"40", b"0"), (b"40", b"-400"), (b"nan", b"inf")],
                         ids=["text", "zero", "negative", "not-finite"])
def test_an_unusable_window_falls_back_to_the_image_range(center: bytes, width: bytes) -> None:
    rng = np.random.default_rng(5)
    hu = rng.normal(40, 30, (64, 64)).astype(np.float32)
    # Written as valid placeholders, then overwritten in the bytes: pydicom refuses to write nonsense.
    data = part10(ct(hu, WindowCenter="11111.111", WindowWidth="22222.222"))
    data = data.replace(b"11111.111", center.ljust(9)).replace(b"22222.222", width.ljust(9))
    grey = pixels_of(render_thumbnail(data))
    assert grey.min() <= 5 and grey.max() >= 250


def test_signed_pixels_render() -> None:
    pixels = np.tile(np.linspace(-2000, 2000, 64).astype(np.int16), (64, 1))
    grey = pixels_of(render_thumbnail(part10(image(pixels, WindowCenter=0, WindowWidth=2000))))
    assert grey[0, 0] == 0 and grey[0, -1] == 255 and abs(int(grey[0, 32]) - 128) <= 10


# ---------------------------------------------------------------- colour (PS3.3 C.7.6.3.1.2, C.7.6.3.1.5)


def test_palette_color_applies_the_lookup_tables() -> None:
    indices = np.tile(np.arange(256, dtype=np.uint8), (8, 1))
    ds = image(indices, "PALETTE COLOR")
    entries = np.arange(256, dtype=np.uint16) * 257  # 16-bit entries
    for colour, table in (("Red", entries), ("Green", np.zeros(256, np.uint16)), ("Blue", entries[::-1])):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", table.astype("<u2").tobytes())
    thumbnail = render_thumbnail(part10(ds), size=256)
    rgb = pixels_of(thumbnail)
    assert thumbnail.photometric == "PALETTE COLOR" and rgb.shape == (8, 256, 3)
    assert rgb[0, 10].tolist() == [10, 0, 245] and rgb[0, 200].tolist() == [200, 0, 55]


def test_a_bundled_palette_image_renders_in_colour() -> None:
    rgb = pixels_of(render_thumbnail(TEST_FILES / "examples_palette.dcm"))
    assert rgb.ndim == 3 and (np.abs(rgb[..., 0] - rgb[..., 2]) > 30).any()


def colour_gradient(rows: int = 32, columns: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:columns]
    return np.stack([x * 255 // (columns - 1), y * 255 // (rows - 1), 255 - x * 255 // (columns - 1)],
                    axis=-1).astype(np.uint8)


def test_rgb_and_ybr_full_agree() -> None:
    rgb = colour_gradient()
    from_rgb = pixels_of(render_thumbnail(part10(image(rgb, "RGB"))))
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    from_ybr = pixels_of(render_thumbnail(part10(image(ybr, "YBR_FULL"))))
    assert from_rgb.shape == (32, 48, 3) and np.abs(from_rgb - rgb).max() == 0
    assert np.abs(from_ybr - from_rgb).max() <= 2


def test_ybr_full_422_agrees_with_rgb() -> None:
    """Native YBR_FULL_422 (PS3.3 C.7.6.3.1.2, PS3.5 8.2.1): Y1 Y2 Cb Cr per pair of pixels."""
    rgb = colour_gradient()
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL").astype(np.uint16)
    y, cb, cr = ybr[..., 0], ybr[..., 1], ybr[..., 2]
    pairs = np.stack([y[:, 0::2], y[:, 1::2], (cb[:, 0::2] + cb[:, 1::2]) // 2, (cr[:, 0::2] + cr[:, 1::2]) // 2],
                     axis=-1).astype(np.uint8)
    ds = image(rgb, "RGB")
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PixelData = pairs.tobytes()
    from_422 = pixels_of(render_thumbnail(part10(ds)))
    assert np.abs(from_422 - rgb).mean() < 3 and np.abs(from_422 - rgb).max() <= 12


def test_planar_rgb_renders_like_interleaved_rgb() -> None:
    rgb = colour_gradient()
    ds = image(rgb, "RGB")
    ds.PlanarConfiguration = 1
    ds.PixelData = np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes()
    assert np.array_equal(pixels_of(render_thumbnail(part10(ds))), rgb)


def test_rgb_compressed_as_jpeg_2000_with_the_colour_transform_agrees() -> None:
    """Lossless JPEG 2000 of RGB is stored as YBR_RCT (PS3.5 8.2.4); the decoder gives RGB back."""
    rgb = colour_gradient()
    ds = image(rgb, "RGB")
    ds.PhotometricInterpretation = "YBR_RCT"  # pydicom's encoder: RGB pixels, stored with the RCT (use_mct)
    data = part10(ds, JPEG2000Lossless)
    assert pydicom.dcmread(io.BytesIO(data)).PhotometricInterpretation == "YBR_RCT"
    thumbnail = render_thumbnail(data)
    assert thumbnail.photometric == "YBR_RCT" and np.array_equal(pixels_of(thumbnail), rgb)


#: pydicom's bundled "SC_rgb" picture in many encodings (JPEG Baseline writes YBR_FULL(_422) or RGB).
SC_RGB_ENCODINGS = [
    ("SC_rgb_jpeg_gdcm.dcm", 0.0),  # JPEG Lossless SV1
    ("SC_rgb_rle_16bit.dcm", 0.0),  # RLE, 16 bits per sample
    ("SC_rgb_rle_32bit.dcm", 0.0),  # RLE, 32 bits per sample
    ("SC_rgb_gdcm_KY.dcm", 0.0),
    ("SC_rgb_dcmtk_+eb+cr.dcm", 1.0),  # JPEG Baseline, RGB components
    ("SC_rgb_dcmtk_+eb+cy+n2.dcm", 1.0),  # JPEG Baseline, YBR_FULL
    ("SC_rgb_dcmtk_+eb+cy+s2.dcm", 1.0),
    ("SC_rgb_jpeg_dcmtk.dcm", 1.0),
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", 4.0),  # JPEG Baseline, YBR_FULL_422 subsampled
    ("SC_rgb_jpeg_lossy_gdcm.dcm", 4.0),
    ("SC_rgb_jls_lossy_line.dcm", 1.0),  # JPEG-LS near-lossless
    ("SC_ybr_full_422_uncompressed.dcm", 1.0),
]


@pytest.mark.parametrize(("name", "mean_difference"), SC_RGB_ENCODINGS, ids=[n for n, _ in SC_RGB_ENCODINGS])
def test_bundled_colour_encodings_render_like_the_rle_original(name: str, mean_difference: float) -> None:
    original = pixels_of(render_thumbnail(TEST_FILES / "SC_rgb_rle.dcm"))
    rendered = pixels_of(render_thumbnail(TEST_FILES / name))
    assert rendered.shape == original.shape == (100, 100, 3)
    assert np.abs(rendered - original).mean() <= mean_difference


# ---------------------------------------------------------------- multi-frame


def numbered_frames(count: int) -> np.ndarray:
    """Frames where frame k has a bright square in column band k (and is otherwise dark)."""
    frames = np.zeros((count, 16, 16 * count), np.uint8)
    for k in range(count):
        frames[k, :, 16 * k:16 * (k + 1)] = 200
    return frames


def bright_band(thumbnail: Thumbnail) -> int:
    grey = pixels_of(thumbnail)
    return int(np.argmax([grey[:, 16 * k:16 * (k + 1)].mean() for k in range(grey.shape[1] // 16)]))


@pytest.mark.parametrize(("count", "middle"), [(5, 2), (4, 2), (2, 1)])
def test_a_multi_frame_image_renders_its_middle_frame(count: int, middle: int) -> None:
    ds = image(numbered_frames(count), NumberOfFrames=count)
    thumbnail = render_thumbnail(part10(ds), size=512)
    assert (thumbnail.frames, thumbnail.frame) == (count, middle)
    assert bright_band(thumbnail) == middle


def corrupt_frames(data: bytes, corrupt: set[int]) -> bytes:
    """Re-encapsulate the frames of ``data`` with the frames in ``corrupt`` replaced by garbage."""
    ds = pydicom.dcmread(io.BytesIO(data))
    frames = list(generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames))
    frames = [bytes(len(f)) + b"\xff" * 4 if k in corrupt else f for k, f in enumerate(frames)]
    ds.PixelData = encapsulate(frames)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless])
def test_only_the_middle_frame_is_decoded(syntax: str) -> None:
    ds = image(numbered_frames(3), NumberOfFrames=3)
    data = part10(ds, syntax)
    outer_broken = corrupt_frames(data, {0, 2})
    assert bright_band(render_thumbnail(outer_broken, size=512)) == 1  # the broken frames were never decoded
    with pytest.raises(RenderError):
        render_thumbnail(corrupt_frames(data, {1}))


def test_a_bundled_multi_frame_colour_image_renders_its_middle_frame() -> None:
    thumbnail = render_thumbnail(TEST_FILES / "SC_rgb_rle_2frame.dcm")
    first = pixels_of(render_thumbnail(TEST_FILES / "SC_rgb_rle.dcm"))
    assert (thumbnail.frames, thumbnail.frame) == (2, 1)
    assert np.abs(pixels_of(thumbnail) - (255 - first)).max() <= 1  # its 2nd frame is the 1st inverted


# ---------------------------------------------------------------- transfer syntaxes


def sixteen_bit_ct() -> Dataset:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:48, 0:64]
    hu = (np.hypot(x - 32, y - 24) * 40 - 1000 + rng.normal(0, 20, (48, 64))).astype(np.float32)
    return ct(hu)


LOSSLESS = [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless,
            JPEGLSLossless, JPEG2000Lossless]


@pytest.mark.parametrize("window", [{"WindowCenter": 40, "WindowWidth": 400}, {}], ids=["window", "no-window"])
@pytest.mark.parametrize("syntax", LOSSLESS, ids=[pydicom.uid.UID(s).keyword for s in LOSSLESS])
def test_lossless_syntaxes_render_exactly_like_explicit_vr_little_endian(syntax: str,
                                                                          window: dict[str, int]) -> None:
    ds = sixteen_bit_ct()
    for keyword, value in window.items():
        setattr(ds, keyword, value)
    reference = render_thumbnail(part10(ds))
    thumbnail = render_thumbnail(part10(ds, syntax))
    assert thumbnail.transfer_syntax_uid == syntax
    assert np.array_equal(pixels_of(thumbnail), pixels_of(reference))


@pytest.mark.parametrize(("syntax", "options"), [(JPEGLSNearLossless, {"jls_error": 3}),
                                                 (JPEG2000, {"j2k_cr": [5]})], ids=["JPEG-LS near", "JPEG 2000"])
def test_lossy_syntaxes_render_close_to_the_original(syntax: str, options: dict[str, object]) -> None:
    ds = sixteen_bit_ct()
    ds.WindowCenter, ds.WindowWidth = 40, 400
    reference = pixels_of(render_thumbnail(part10(ds)))
    rendered = pixels_of(render_thumbnail(part10(ds, syntax, **options)))
    assert np.abs(rendered - reference).mean() < 3


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_expb.dcm", "MR_small_implicit.dcm",
                                  "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_bundled_encodings_of_one_mr_render_alike(name: str) -> None:
    original = pixels_of(render_thumbnail(TEST_FILES / "MR_small.dcm"))
    assert np.array_equal(pixels_of(render_thumbnail(TEST_FILES / name)), original)


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "JPEG2000.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "image_dfl.dcm", "MR_small_RLE.dcm", "CT_small.dcm"])
def test_bundled_monochrome_files_render(name: str) -> None:
    grey = pixels_of(render_thumbnail(TEST_FILES / name))
    assert grey.ndim == 2 and grey.std() > 10  # a picture, not a flat field


def test_a_512_ct_renders_well_under_150_ms() -> None:
    data = part10(synthetic_ct())
    render_thumbnail(data)  # warm-up
    times = []
    for _ in range(7):
        start = time.perf_counter()
        render_thumbnail(data)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.150


# ---------------------------------------------------------------- hostile input


def assert_refused(source: bytes | Path, **kwargs: int) -> RenderError:
    with pytest.raises(RenderError) as caught:
        render_thumbnail(source, **kwargs)
    message = str(caught.value)
    assert message and SECRET_NAME.split("^")[0] not in message and SECRET_ID not in message
    return caught.value


def test_random_bytes_are_refused() -> None:
    noise = random.Random(1).randbytes(4096)
    assert "not a DICOM" in str(assert_refused(noise))
    assert_refused(noise[:128] + b"DICM" + noise[132:])  # the magic alone does not make a file
    assert_refused(b"")


@pytest.mark.parametrize("fraction", [0.02, 0.05, 0.1, 0.3, 0.6, 0.9, 0.999])
def test_truncated_files_are_refused(fraction: float) -> None:
    data = part10(sixteen_bit_ct())
    assert_refused(data[:int(len(data) * fraction)])


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless, RLELossless])
def test_truncated_compressed_files_are_refused(syntax: str) -> None:
    data = part10(sixteen_bit_ct(), syntax)
    assert_refused(data[:len(data) - 600])


def test_a_dataset_without_pixel_data_is_refused() -> None:
    ds = image(ramp())
    del ds.PixelData
    assert str(assert_refused(part10(ds))) == "no pixel data"
    assert str(assert_refused(TEST_FILES / "rtplan.dcm")) == "no pixel data"


def test_absurd_rows_and_columns_are_refused_before_decoding() -> None:
    ds = image(ramp(4, 4))
    ds.Rows = ds.Columns = 60000  # header only: 4x4 pixels of data
    assert 60000 * 60000 > MAX_FRAME_PIXELS
    assert "too large" in str(assert_refused(part10(ds)))


def test_absurd_number_of_frames_is_refused() -> None:
    assert_refused(part10(image(ramp(8, 8), NumberOfFrames=1_000_000_000)))
    assert_refused(part10(image(ramp(8, 8), NumberOfFrames=0)))


@pytest.mark.parametrize(("keyword", "value"), [("BitsAllocated", 12), ("BitsAllocated", 0), ("BitsStored", 17),
                                                ("SamplesPerPixel", 2), ("PhotometricInterpretation", "HSV"),
                                                ("PhotometricInterpretation", "RGB"), ("Rows", 0)])
def test_unsupported_image_pixel_values_are_refused(keyword: str, value: object) -> None:
    ds = image(ramp(8, 8))
    setattr(ds, keyword, value)
    assert_refused(part10(ds))


def test_garbage_in_a_compressed_frame_is_refused() -> None:
    data = part10(sixteen_bit_ct(), JPEGLSLossless)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PixelData = encapsulate([random.Random(2).randbytes(500)])
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert "cannot decode" in str(assert_refused(buffer.getvalue()))


@pytest.mark.parametrize("size", [0, -5, 100_000])
def test_a_size_out_of_range_is_refused(size: int) -> None:
    assert_refused(part10(image(ramp(8, 8))), size=size)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    assert_refused(tmp_path / "nothing.dcm")


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about every garbled value it meets
def test_mutated_files_render_or_are_refused_nothing_else() -> None:
    """Random byte changes anywhere in a valid file: a thumbnail or a RenderError, never another exception."""
    data = bytearray(part10(sixteen_bit_ct(), RLELossless))
    rng = random.Random(12)
    outcomes = {"rendered": 0, "refused": 0}
    for _ in range(300):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(128, 1200)] = rng.randrange(256)  # the header and the first fragment
        try:
            render_thumbnail(bytes(mutated))
            outcomes["rendered"] += 1
        except RenderError:
            outcomes["refused"] += 1
    assert outcomes["rendered"] and outcomes["refused"]
