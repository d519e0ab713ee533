"""Checking a DICOM Part 10 file (PS3.10 7.1) before it is stored or counted as present.

:func:`read_identity` reads the File Meta Information and the dataset's element headers - never the
values past a small size, so a large image costs a few seeks, not its pixels - and returns the SOP
Instance UID and SOP Class UID.  A file is *complete* when the preamble and ``DICM`` prefix are there
(PS3.10 7.1), the dataset parses, and no element's value runs past the end of the file (a truncated
transfer or a crash mid-write).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.filereader import data_element_generator

_UNDEFINED_LENGTH = 0xFFFFFFFF
#: Values larger than this are skipped with a seek, not read (PS3.5 7.1: the length comes first).
_DEFER_SIZE = 4096
#: PS3.10 7.1: 128-byte preamble + "DICM"; then (0002,0000) is 12 bytes (explicit VR little endian).
_GROUP_LENGTH_END = 128 + 4 + 12


class Part10Error(ValueError):
    """Not a complete DICOM Part 10 object; the message says what is wrong."""


def read_identity(path: Path) -> tuple[str, str]:
    """(SOP Instance UID, SOP Class UID) of the complete Part 10 file at ``path``.

    :raises Part10Error: no ``DICM`` prefix, no File Meta Information, unparsable, truncated, or
        without the dataset's SOP Instance UID (0008,0018) / SOP Class UID (0008,0016).
    """
    try:
        size = os.stat(path).st_size
        with open(path, "rb") as fp:
            ds = dcmread(fp, stop_before_pixels=True, defer_size=_DEFER_SIZE)
            meta = ds.file_meta
            transfer_syntax = meta.get("TransferSyntaxUID")
            group_length = meta.get("FileMetaInformationGroupLength")
            if transfer_syntax is None or group_length is None:
                raise Part10Error("no Transfer Syntax UID (0002,0010) or File Meta Information Group Length "
                                  "(0002,0000) in the File Meta Information (PS3.10 7.1)")
            sop_instance = str(ds.get("SOPInstanceUID", "")).strip()
            sop_class = str(ds.get("SOPClassUID", "")).strip()
            if not (sop_instance and sop_class):
                raise Part10Error("no SOP Instance UID (0008,0018) or SOP Class UID (0008,0016) in the dataset")
            if not transfer_syntax.is_deflated:
                fp.seek(_GROUP_LENGTH_END + int(group_length))
                end = last = fp.tell()
                for element in data_element_generator(fp, transfer_syntax.is_implicit_VR,
                                                      transfer_syntax.is_little_endian, defer_size=_DEFER_SIZE):
                    last = fp.tell()  # past the value (read, or skipped by a seek)
                    if isinstance(element, RawDataElement) and element.length != _UNDEFINED_LENGTH:
                        last = element.value_tell + element.length
                    end = max(end, last)
                if end > size:
                    raise Part10Error(f"truncated: an element ends at byte {end}, the file has {size} bytes")
                if last < size:  # the walk stopped on a partial element header
                    raise Part10Error(f"truncated: {size - last} bytes at the end are no whole element")
    except Part10Error:
        raise
    except InvalidDicomError as exc:
        raise Part10Error(f"not a DICOM Part 10 file: {exc}") from None
    except OSError:
        raise
    except Exception as exc:  # pydicom raises many types for garbage input
        raise Part10Error(f"unreadable DICOM: {type(exc).__name__}: {exc}") from None
    return sop_instance, sop_class
