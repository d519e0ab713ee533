"""Server-side thumbnails of DICOM images (the portal's manifest page; later DICOMweb ``/rendered``).

:func:`render_thumbnail` turns one Part 10 instance into a small 8-bit PNG following the grayscale
and colour pipelines of PS3.3 / PS3.4 as far as a thumbnail needs them:

- stored values -> Modality LUT (PS3.3 C.11.1: Rescale Slope / Intercept, or the Modality LUT
  Sequence) -> VOI LUT (PS3.3 C.11.2: the first Window Center / Width with its VOI LUT Function, or
  the VOI LUT Sequence, else a robust min/max of the image so that a CT without a window is not black)
  -> 8-bit grey, inverted for MONOCHROME1 (PS3.3 C.7.6.3.1.2: the minimum value is white);
- PALETTE COLOR through its Red/Green/Blue palette LUTs (PS3.3 C.7.6.3.1.5, C.7.9);
- RGB as is, YBR_FULL / YBR_FULL_422 (and the partial-range YBR of some JPEG writers) converted to
  RGB (PS3.3 C.7.6.3.1.2); YBR_ICT / YBR_RCT come out of the JPEG 2000 decoder as RGB already.

Only the middle frame of a multi-frame image is decoded (pydicom 3's decoders take a frame
``index``), and the header is checked before any decoding: an image whose frame would exceed
:data:`MAX_FRAME_PIXELS` is refused without touching its pixel data.

Every failure is a :class:`RenderError` whose message says what is wrong in words and never carries
a value from the dataset (no patient data can leak into a log or a page through it).

Reading: the whole Part 10 object is parsed in memory (bytes from the PACS, or a file read once);
the caller bounds the size of what it fetches.  Pixel decoding uses the plugins pydicom finds
(requirements.txt: pillow, pyjpegls, pylibjpeg with libjpeg and openjpeg).
"""

from __future__ import annotations

import io
import math
import pathlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, convert_color_space
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID

#: Largest frame we decode (rows x columns x samples): 64 Mi samples, about 128 MiB at 16 bits.
MAX_FRAME_PIXELS = 64 * 1024 * 1024
#: Thumbnail sizes a caller may ask for (pixels of the bounding square).
MIN_SIZE, MAX_SIZE = 1, 2048
#: Robust min/max when the image carries no window (PS3.3 C.11.2 leaves the choice to the application).
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5
#: At most this many samples feed the percentile estimate (a strided subsample of larger frames).
_PERCENTILE_SAMPLES = 128 * 128
#: PNG zlib level: thumbnails are small, speed matters more than the last bytes.
_PNG_COMPRESS_LEVEL = 1

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = (0x7FE00008, 0x7FE00009)


class RenderError(Exception):
    """The instance cannot be rendered; the message says why, in words, without patient data."""


@dataclass(frozen=True)
class Thumbnail:
    """A rendered PNG and what it shows."""

    png: bytes
    width: int
    height: int
    rows: int
    columns: int
    frames: int
    frame: int  # 0-based index of the rendered frame: the middle one of a multi-frame image
    photometric: str  # Photometric Interpretation as stored (before any decoder conversion)
    modality: str
    series_description: str
    series_number: int | None
    sop_instance_uid: str
    transfer_syntax_uid: str


def render_thumbnail(source: bytes | pathlib.Path, *, size: int = 128) -> Thumbnail:
    """A PNG of ``source`` (a DICOM Part 10 object) fitting ``size`` x ``size``, aspect ratio kept.

    Images smaller than ``size`` are not enlarged.  Raises :class:`RenderError` for anything that
    cannot be rendered, and only that.
    """
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise RenderError(f"thumbnail size must be a whole number from {MIN_SIZE} to {MAX_SIZE}")
    ds = _read(source)
    try:
        return _render(ds, size)
    except RenderError:
        raise
    except MemoryError as exc:
        raise RenderError("not enough memory to render the image") from exc
    except Exception as exc:  # hostile data breaks numpy/pydicom/Pillow in many ways; none escapes
        raise RenderError(f"cannot render the image ({type(exc).__name__})") from exc


def _read(source: bytes | pathlib.Path) -> Dataset:
    try:
        if isinstance(source, bytes | bytearray | memoryview):
            fp: Any = io.BytesIO(source)
        elif isinstance(source, pathlib.Path):
            fp = source.open("rb")
        else:
            raise RenderError("source must be bytes or a path")
    except OSError as exc:
        raise RenderError("cannot open the file") from exc
    try:
        with fp:
            # force=False: a Part 10 object (preamble + "DICM" + file meta, PS3.10 7.1) or nothing.
            return dcmread(fp)
    except InvalidDicomError as exc:
        raise RenderError("not a DICOM Part 10 file") from exc
    except MemoryError as exc:
        raise RenderError("not enough memory to read the file") from exc
    except Exception as exc:  # truncated or garbled: struct.error, EOFError, ValueError, ...
        raise RenderError(f"cannot read the DICOM file ({type(exc).__name__})") from exc


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    """An integer attribute, None when absent, empty or not a number (values are hostile)."""
    try:
        value = ds.get(keyword, default)
        if value is None or value == "":
            return default
        if not isinstance(value, int | float | str):  # multi-valued: the first value
            value = value[0]
        number = int(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return default
    return number


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword, "")
        return "" if value is None else str(value).strip()
    except Exception:  # an undecodable value is just missing for a label
        return ""


def _render(ds: Dataset, size: int) -> Thumbnail:
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = UID(str(getattr(meta, "TransferSyntaxUID", "") or ""))
    if not transfer_syntax:
        raise RenderError("no transfer syntax in the file meta information")
    if _PIXEL_DATA not in ds:
        if any(tag in ds for tag in _FLOAT_PIXEL_DATA):
            raise RenderError("unsupported float pixel data")
        raise RenderError("no pixel data")
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    samples = _int(ds, "SamplesPerPixel", 1)
    bits_allocated, bits_stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
    frames = _int(ds, "NumberOfFrames", 1)
    photometric = _text(ds, "PhotometricInterpretation").upper()
    # PS3.3 C.7.6.3: the Image Pixel module; check it before any decoding (hostile headers).
    if not rows or not columns or rows < 1 or columns < 1:
        raise RenderError("missing or invalid Rows / Columns")
    if samples not in (1, 3):
        raise RenderError("unsupported Samples per Pixel")
    if rows * columns * samples > MAX_FRAME_PIXELS:
        raise RenderError("image too large to render")
    if bits_allocated not in (1, 8, 16, 32):
        raise RenderError("unsupported Bits Allocated")
    if bits_stored is None or not 1 <= bits_stored <= bits_allocated:
        raise RenderError("unsupported Bits Stored")
    if frames is None or frames < 1:
        raise RenderError("invalid Number of Frames")
    if photometric in _MONOCHROME or photometric == "PALETTE COLOR":
        if samples != 1:
            raise RenderError("Samples per Pixel does not match the Photometric Interpretation")
    elif photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT",
                         "YBR_RCT"):
        if samples != 3:
            raise RenderError("Samples per Pixel does not match the Photometric Interpretation")
    else:
        raise RenderError("unsupported Photometric Interpretation")

    frame = frames // 2
    pixels, decoded_photometric = _decode_frame(ds, transfer_syntax, frame)
    if photometric in _MONOCHROME:
        grey = _grey(ds, pixels, frame)
        image = Image.fromarray(255 - grey if photometric == "MONOCHROME1" else grey)
    elif photometric == "PALETTE COLOR":
        image = Image.fromarray(np.ascontiguousarray(_palette(ds, pixels)))
    else:
        image = Image.fromarray(np.ascontiguousarray(_colour(pixels, decoded_photometric, bits_stored)))
    image = _fit(image, size)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return Thumbnail(
        png=buffer.getvalue(), width=image.width, height=image.height, rows=rows, columns=columns,
        frames=frames, frame=frame, photometric=photometric, modality=_text(ds, "Modality"),
        series_description=_text(ds, "SeriesDescription"), series_number=_int(ds, "SeriesNumber"),
        sop_instance_uid=_text(ds, "SOPInstanceUID") or _text(meta, "MediaStorageSOPInstanceUID"),
        transfer_syntax_uid=str(transfer_syntax))


def _decode_frame(ds: Dataset, transfer_syntax: UID, frame: int) -> tuple[np.ndarray, str]:
    """Decode only frame ``frame``; returns it and its Photometric Interpretation after decoding
    (JPEG and JPEG 2000 decoders deliver YBR_FULL(_422) / YBR_ICT / YBR_RCT as RGB)."""
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError as exc:
        raise RenderError(f"unsupported transfer syntax ({transfer_syntax.name})") from exc
    if not decoder.is_available:
        raise RenderError(f"no decoder installed for {transfer_syntax.name}")
    try:
        # validate=True: pydicom checks the pixel data length / module values before decoding.
        arr, properties = decoder.as_array(ds, index=frame, validate=True, raw=False, **as_pixel_options(ds))
    except MemoryError as exc:
        raise RenderError("not enough memory to decode the image") from exc
    except Exception as exc:  # decoder errors can quote header values; keep only what we know
        raise RenderError(f"cannot decode the pixel data ({transfer_syntax.name})") from exc
    return arr, str(properties.get("photometric_interpretation", ds.PhotometricInterpretation)).upper()


def _sequence_item(ds: Dataset, frame: int, macro: str) -> Dataset | None:
    """The item of a functional group macro (PS3.3 C.7.6.16) for ``frame``: per-frame first, then shared."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        try:
            item = ds.get(groups)[index].get(macro)[0]
        except (TypeError, IndexError, KeyError, AttributeError):
            continue
        return item
    return None


def _number(ds: Dataset, keyword: str, default: float | None = None) -> float | None:
    """A decimal attribute's (first) value; ``default`` when absent, empty, not a number or not finite."""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return default
        if not isinstance(value, int | float | str):
            value = value[0]  # multi-valued Window Center / Width: the first pair (PS3.3 C.11.2.1.2)
        number = float(value)
    except (TypeError, ValueError, IndexError, OverflowError, AttributeError):
        return default
    return number if math.isfinite(number) else default


def _grey(ds: Dataset, stored: np.ndarray, frame: int) -> np.ndarray:
    """MONOCHROME1/2 stored values -> 8-bit grey, before any MONOCHROME1 inversion."""
    if stored.ndim != 2:
        raise RenderError("unexpected pixel array shape")
    # PS3.3 C.11.1: Modality LUT. Enhanced multi-frame images carry it in the Pixel Value
    # Transformation functional group (C.7.6.16.2.9) instead of the top-level attributes.
    if "ModalityLUTSequence" in ds:
        values = apply_modality_lut(stored, ds).astype(np.float32, copy=False)
    else:
        holder = ds if "RescaleSlope" in ds else _sequence_item(ds, frame, "PixelValueTransformationSequence") or ds
        slope = _number(holder, "RescaleSlope") or 1.0  # 0 would flatten the image: not a real slope
        intercept = _number(holder, "RescaleIntercept", 0.0) or 0.0
        values = stored.astype(np.float32)
        if slope != 1.0 or intercept != 0.0:
            values = values * np.float32(slope) + np.float32(intercept)

    # PS3.3 C.11.2: VOI LUT. A window (C.11.2.1.2) wins; Enhanced images carry it per frame (C.7.6.16.2.10).
    holder = ds if "WindowCenter" in ds else _sequence_item(ds, frame, "FrameVOILUTSequence") or ds
    center, width = _number(holder, "WindowCenter"), _number(holder, "WindowWidth")
    function = _text(holder, "VOILUTFunction").upper() or "LINEAR"
    if center is not None and width is not None and width > 0 and (width >= 1 or function != "LINEAR"):
        return _window(values, center, width, function)
    if "VOILUTSequence" in ds:
        try:
            values = apply_voi_lut(np.rint(values).astype(np.int64), ds, index=0, prefer_lut=True)
            values = values.astype(np.float32, copy=False)
        except Exception:  # a broken VOI LUT: fall back to the robust range, still an image
            pass
    return _robust(values, ds, stored)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """Window Center / Width to 0..255 (PS3.3 C.11.2.1.2.1 LINEAR, C.11.2.1.3.2 LINEAR_EXACT,
    C.11.2.1.3.1 SIGMOID)."""
    if function == "SIGMOID":
        out = 255.0 / (1.0 + np.exp(np.clip(-4.0 * (values - center) / width, -80, 80)))
    elif function == "LINEAR_EXACT":
        out = ((values - center) / width + 0.5) * 255.0
    else:  # LINEAR, and any unknown function (the defined term is LINEAR by default)
        out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0 if width > 1 else \
            np.where(values > center - 0.5, 255.0, 0.0)
    return np.clip(out, 0, 255).astype(np.uint8)


def _robust(values: np.ndarray, ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """No window: stretch the 0.5..99.5 percentiles of the image to 0..255, padding pixels excluded
    (PS3.3 C.7.5.1.1.2 Pixel Padding Value marks pixels that are not part of the image, e.g. outside
    a CT's field of view)."""
    step = max(1, int(math.sqrt(values.size / _PERCENTILE_SAMPLES)))
    sample = values[::step, ::step]
    padding = _int(ds, "PixelPaddingValue")
    if padding is not None:
        keep = stored[::step, ::step] != padding
        if keep.any():
            sample = sample[keep]
    low, high = np.percentile(sample, (LOW_PERCENTILE, HIGH_PERCENTILE))
    if not high > low:  # a flat image (or all padding): mid grey beats black-or-white noise
        low, high = float(np.min(sample)), float(np.max(sample))
        if not high > low:
            return np.full(values.shape, 128 if values.size else 0, dtype=np.uint8)
    scale = np.float32(255.0 / (high - low))
    return np.clip((values - np.float32(low)) * scale, 0, 255).astype(np.uint8)


def _palette(ds: Dataset, indices: np.ndarray) -> np.ndarray:
    """PALETTE COLOR: each stored value looked up in the Red/Green/Blue Palette Color LUTs
    (PS3.3 C.7.6.3.1.5, C.7.9; segmented LUTs C.7.9.2 handled by pydicom)."""
    if indices.ndim != 2:
        raise RenderError("unexpected pixel array shape")
    try:
        rgb = apply_color_lut(indices, ds)
    except Exception as exc:
        raise RenderError("invalid palette color lookup table") from exc
    return _to_8_bits(rgb, 16 if rgb.dtype.itemsize > 1 else 8)


def _colour(pixels: np.ndarray, photometric: str, bits_stored: int) -> np.ndarray:
    """Three-sample pixels as 8-bit RGB (PS3.3 C.7.6.3.1.2)."""
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise RenderError("unexpected pixel array shape")
    if photometric in ("YBR_FULL", "YBR_FULL_422"):  # not converted by the decoder (raw delivery)
        pixels = convert_color_space(pixels, photometric, "RGB")
    elif photometric in ("YBR_PARTIAL_422", "YBR_PARTIAL_420"):
        pixels = _ybr_partial_to_rgb(pixels, bits_stored)
    elif photometric in ("YBR_ICT", "YBR_RCT"):
        # The JPEG 2000 decoders undo the component transform; if one did not, we cannot tell here.
        raise RenderError("unsupported undecoded YBR_ICT / YBR_RCT pixel data")
    return _to_8_bits(pixels, bits_stored)


def _ybr_partial_to_rgb(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    """YBR_PARTIAL (PS3.3 C.7.6.3.1.2: ITU-R BT.601 studio range, Y 16..235, Cb/Cr 16..240 at 8 bits)."""
    scale = float(1 << (bits_stored - 8)) if bits_stored >= 8 else 1.0
    y, cb, cr = (pixels[..., k].astype(np.float32) / scale for k in range(3))
    y = (y - 16.0) * (255.0 / 219.0)
    cb, cr = (cb - 128.0) * (255.0 / 224.0), (cr - 128.0) * (255.0 / 224.0)
    rgb = np.stack((y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb), axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _to_8_bits(pixels: np.ndarray, bits: int) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    if bits > 8 and np.issubdtype(pixels.dtype, np.integer):
        return np.clip(pixels >> (bits - 8), 0, 255).astype(np.uint8)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _fit(image: Image.Image, size: int) -> Image.Image:
    """Shrink to fit ``size`` x ``size`` keeping the aspect ratio of Rows x Columns (never enlarge):
    Pillow's ``thumbnail`` reduces by whole factors first (fast), then resamples bilinearly."""
    if image.width > size or image.height > size:
        image.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return image
