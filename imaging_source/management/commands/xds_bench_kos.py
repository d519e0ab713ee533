"""manage.py xds_bench_kos: time to build + encode a KOS manifest for N synthetic instances.

Issue 5 target: 2 000 instances in <= 1 s. Writes var/bench/kos.json (the lead merges it into
var/bench/imaging.json).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from pydicom.uid import generate_uid

from imaging_source.study import InstanceRef, SeriesRef, StudyRef
from kos.builder import RetrieveLocation, build_manifest, to_part10
from kos.validate import errors, validate_manifest

TARGET_SECONDS = 1.0
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def synthetic_study(instances: int, per_series: int = 500) -> StudyRef:
    """A CT study with ``instances`` instances in series of ``per_series``, fresh UIDs."""
    series = []
    for k in range((instances + per_series - 1) // per_series):
        count = min(per_series, instances - k * per_series)
        series.append(SeriesRef(generate_uid(), "CT", k + 1, "CHEST",
                                [InstanceRef(CT_IMAGE_STORAGE, generate_uid(), j + 1) for j in range(count)]))
    return StudyRef(generate_uid(), "BENCH-KOS", None, "Bench^Kos", "19700101", "O", "20240101", "120000",
                    "ACC-BENCH", None, "1", "KOS benchmark", "", series)


class Command(BaseCommand):
    help = "Benchmark KOS manifest building (issue 5: 2 000 instances in <= 1 s)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--instances", type=int, default=2000)
        parser.add_argument("--repeat", type=int, default=5)
        parser.add_argument("--output", default=str(Path(settings.VAR_DIR) / "bench" / "kos.json"))

    def handle(self, *args: Any, **options: Any) -> None:
        n, repeat = options["instances"], options["repeat"]
        if n < 1 or repeat < 1:
            raise CommandError("--instances and --repeat must be positive")
        study = synthetic_study(n)
        location = RetrieveLocation(settings.XDS_IMAGING_SOURCE_ID, settings.DICOM_AE_TITLE)
        build_times, total_times = [], []
        data = b""
        for _ in range(repeat):
            start = time.perf_counter()
            ds = build_manifest(study, location)
            built = time.perf_counter()
            data = to_part10(ds)
            done = time.perf_counter()
            build_times.append(built - start)
            total_times.append(done - start)
        # The benchmark measures a correct manifest, not just any bytes.
        problems = errors(validate_manifest(data, expected_location_uid=location.location_uid))
        if problems:
            raise CommandError("benchmark manifest is invalid: " + "; ".join(map(str, problems)))
        best = min(total_times)
        result = {
            "benchmark": "kos_build",
            "instances": n,
            "series": len(study.series),
            "repeat": repeat,
            "seconds_best": round(best, 4),
            "seconds_median": round(statistics.median(total_times), 4),
            "seconds_build_only_best": round(min(build_times), 4),
            "bytes": len(data),
            "target_seconds": TARGET_SECONDS,
            "meets_target": best <= TARGET_SECONDS,
            "python": platform.python_version(),
            "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        output = Path(options["output"])
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        verdict = "meets" if result["meets_target"] else "MISSES"
        self.stdout.write(f"KOS for {n} instances: best {best:.3f} s, median {result['seconds_median']:.3f} s "
                          f"({len(data)} bytes) - {verdict} the {TARGET_SECONDS:.0f} s target; wrote {output}")
