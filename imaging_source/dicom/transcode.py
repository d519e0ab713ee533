"""Deliver an instance in one of the transfer syntaxes a RAD-69 consumer asked for.

RAD TF-3 4.69.4.2 (Gazelle assertion RAD69-005): each returned document is a Part 10
object in one of the requested transfer syntaxes; when none is possible, that document gets
an error.  We pass the PACS's copy through untouched when its transfer syntax is one of
the requested ones (first choice), and transcode otherwise.

What pydicom 3.0.2 can do here (checked with ``pydicom.pixels.encoders`` / ``decoders``,
with pylibjpeg 2.1.0, pylibjpeg-libjpeg 2.5.0, pylibjpeg-openjpeg 2.6.0 and pyjpegls 1.5.1
installed):

- decode: every JPEG process (pylibjpeg-libjpeg), JPEG-LS (pyjpegls), JPEG 2000
  (pylibjpeg-openjpeg), RLE (pydicom), Deflate;
- encode, lossless only (we never add a lossy step the consumer did not see coming): RLE
  Lossless (pydicom), JPEG-LS Lossless (pyjpegls), JPEG 2000 Lossless (pylibjpeg-openjpeg);
  Explicit / Implicit VR Little Endian (re-encoding, decompressing first if needed).
- not available: encoding JPEG Baseline/Extended/Lossless (1.2.840.10008.1.2.4.50/.51/.57/.70:
  pydicom 3 has no JPEG encoder); lossy JPEG-LS / JPEG 2000 (need a quality choice the
  request cannot express).  Such targets are only served as pass-through.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

from pydicom import dcmread
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

logger = logging.getLogger(__name__)

NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: Targets we can produce from any decodable source, in our order of preference.
ENCODABLE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless)
#: Sources we can read without a pixel codec.
UNENCAPSULATED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                  ExplicitVRBigEndian)


class TranscodeError(ValueError):
    """The instance cannot be delivered in any of the requested transfer syntaxes."""


def known_transfer_syntax(uid: str) -> bool:
    """True for a transfer syntax UID pydicom knows (PS3.6 Annex A)."""
    try:
        return UID(uid).is_transfer_syntax
    except (ValueError, TypeError):
        return False


def _can_decode(source: str) -> bool:
    if source in UNENCAPSULATED:
        return True
    try:
        return bool(get_decoder(source).is_available)
    except NotImplementedError:
        return False


def choose_target(source: str, requested: Sequence[str], *, has_pixels: bool | None = None) -> str | None:
    """The transfer syntax to deliver: the source when requested, else the first requested one we can encode.

    ``has_pixels`` False (SR, KOS, RT plan...): compressed targets make no sense, only native ones.
    """
    if source in requested:
        return source
    if not _can_decode(source):
        return None
    for uid in requested:
        if uid in NATIVE:
            return uid
        if uid in ENCODABLE and has_pixels is not False:
            return uid
    return None


def transcode(data: bytes, target: str) -> bytes:
    """Re-encode a Part 10 instance in ``target``; returns new Part 10 bytes."""
    ds = dcmread(io.BytesIO(data))
    source = str(ds.file_meta.TransferSyntaxUID)
    if source == target:
        return data
    has_pixels = "PixelData" in ds
    try:
        if target in NATIVE:
            if has_pixels and ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress()  # sets Explicit VR LE and fixes Planar Configuration / Photometric
            ds.file_meta.TransferSyntaxUID = UID(target)
        elif target in ENCODABLE:
            if not has_pixels:
                raise TranscodeError(f"{ds.SOPClassUID.name} has no pixel data to compress as {UID(target).name}")
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress()  # pydicom's encoders take native pixel data only
            ds.compress(UID(target), generate_instance_uid=False)
        else:
            raise TranscodeError(f"no encoder for {UID(target).name} ({target})")
    except TranscodeError:
        raise
    except Exception as exc:  # pydicom raises RuntimeError/ValueError/NotImplementedError per codec
        raise TranscodeError(f"cannot transcode {UID(source).name} -> {UID(target).name}: {exc}") from exc
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    logger.debug("transcoded %s %s -> %s", ds.SOPInstanceUID, source, target)
    return out.getvalue()
