"""manage.py xds_bench_render: time to render a thumbnail of a 512x512 16-bit CT slice, per transfer syntax.

Goal (issue 12, the portal's manifest page): one thumbnail in well under 150 ms.  The slice is
generated here, deterministically (a body phantom in Hounsfield units with seeded noise, 12 bits
stored in 16, Rescale Intercept -1024, a soft-tissue window), and encoded uncompressed (Explicit VR
Little Endian), JPEG-LS Lossless and JPEG 2000 Lossless.  Each is rendered ``--repeat`` times from
its Part 10 bytes (what the portal gets from the PACS), after one warm-up render; the lossless
renderings must equal the uncompressed one pixel for pixel, so the figure is for a correct render.
Writes var/bench/render.json.
"""

from __future__ import annotations

import copy
import io
import json
import math
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, generate_uid

from imaging_source.rendering import RenderError, render_thumbnail

GOAL_MS = 150.0
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SYNTAXES = (("uncompressed", ExplicitVRLittleEndian), ("jpeg-ls-lossless", JPEGLSLossless),
            ("jpeg2000-lossless", JPEG2000Lossless))


def synthetic_ct(side: int = 512, *, seed: int = 12) -> Dataset:
    """A CT slice (CT Image IOD, PS3.3 A.3) of ``side`` x ``side``: air, a water body, lungs, a spine,
    plus seeded noise; stored value = HU + 1024 (PS3.3 C.11.1.1.2: Rescale Slope 1, Intercept -1024)."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side - 0.5
    hu = np.full((side, side), -1000.0, np.float32)  # air
    hu[(x / 0.42) ** 2 + (y / 0.32) ** 2 <= 1] = 40.0  # soft tissue
    for cx in (-0.18, 0.18):
        hu[((x - cx) / 0.13) ** 2 + (y / 0.2) ** 2 <= 1] = -820.0  # lungs
    hu[(x / 0.05) ** 2 + ((y - 0.22) / 0.05) ** 2 <= 1] = 900.0  # vertebra
    hu += np.random.default_rng(seed).normal(0.0, 12.0, hu.shape).astype(np.float32)
    stored = np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["xds-bench-render"])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["xds-bench-render", "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["xds-bench-render", "series"])
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", 1, "Render benchmark"
    ds.PatientName, ds.PatientID = "Bench^Render", "BENCH-RENDER"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = stored.tobytes()
    return ds


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def encodings(ds: Dataset) -> dict[str, bytes]:
    """The slice as Part 10 bytes in each benchmarked transfer syntax."""
    out = {}
    for name, syntax in SYNTAXES:
        copy_ = copy.deepcopy(ds)
        if syntax != ExplicitVRLittleEndian:
            copy_.compress(syntax, generate_instance_uid=False)
        out[name] = part10(copy_)
    return out


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: a value that was measured)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


class Command(BaseCommand):
    help = "Benchmark thumbnail rendering of a 512x512 16-bit CT (goal: well under 150 ms)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--repeat", type=int, default=50, help="renders per transfer syntax")
        parser.add_argument("--size", type=int, default=128, help="thumbnail size (pixels)")
        parser.add_argument("--output", default=str(Path(settings.VAR_DIR) / "bench" / "render.json"))
        parser.add_argument("--json", action="store_true", help="print the JSON figures instead of the table")

    def handle(self, *args: Any, **options: Any) -> None:
        repeat, size = options["repeat"], options["size"]
        if not 1 <= repeat <= 100_000:
            raise CommandError("--repeat must be from 1 to 100000")
        progress = self.stderr if options["json"] else self.stdout
        sources = encodings(synthetic_ct())
        reference: bytes | None = None
        figures: dict[str, Any] = {}
        for name, data in sources.items():
            try:
                first = render_thumbnail(data, size=size)  # warm-up: plugin imports, first-call costs
            except RenderError as exc:
                raise CommandError(f"{name}: {exc}") from exc
            pixels = Image.open(io.BytesIO(first.png)).tobytes()
            if reference is None:
                reference = pixels
            elif pixels != reference:  # lossless: the same picture, or the figure is not for a correct render
                raise CommandError(f"{name}: rendering differs from the uncompressed one")
            times = []
            for k in range(repeat):
                start = time.perf_counter()
                render_thumbnail(data, size=size)
                times.append((time.perf_counter() - start) * 1000.0)
                if (k + 1) % max(1, repeat // 5) == 0 or k + 1 == repeat:
                    progress.write(f"  {name}: {k + 1}/{repeat} renders")
                    progress.flush()
            figures[name] = {
                "transfer_syntax_uid": str(dict(SYNTAXES)[name]),
                "bytes": len(data),
                "ms_median": round(statistics.median(times), 2),
                "ms_p95": round(percentile(times, 0.95), 2),
                "ms_min": round(min(times), 2),
                "ms_max": round(max(times), 2),
                "meets_goal": percentile(times, 0.95) < GOAL_MS,
            }
        result = {
            "benchmark": "thumbnail_render",
            "image": "CT 512x512, 12 bits stored in 16, window 40/400",
            "thumbnail_size": size,
            "png_bytes": len(first.png),
            "repeat": repeat,
            "goal_ms": GOAL_MS,
            "syntaxes": figures,
            "meets_goal": all(f["meets_goal"] for f in figures.values()),
            "python": platform.python_version(),
            "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        output = Path(options["output"])
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
            return
        self.stdout.write(self.table(result))
        self.stdout.write(f"-> {output}")

    @staticmethod
    def table(result: dict[str, Any]) -> str:
        rows = [["transfer syntax", "bytes", "median ms", "p95 ms", "goal", "met"]]
        for name, f in result["syntaxes"].items():
            rows.append([name, str(f["bytes"]), f"{f['ms_median']:.2f}", f"{f['ms_p95']:.2f}",
                         f"< {result['goal_ms']:.0f} ms", "yes" if f["meets_goal"] else "NO"])
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)
