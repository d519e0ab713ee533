"""Run the Imaging Document Source's DICOM listener (one long-running process).

C-STORE SCP (C-MOVE destination for RAD-69, and incoming instances for stable-study
detection), MPPS SCP (COMPLETED -> publish), C-ECHO, and the stable-study watcher.
Every DIMSE transaction logs one line.  Stops cleanly on SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from imaging_source.dicom.config import DicomConfig
from imaging_source.dicom.scp import DicomListener, ReceivedInstance
from imaging_source.stable import StableStudyWatcher, pacs_poller, publish_study


class Command(BaseCommand):
    help = "Run the DICOM listener: C-STORE + MPPS SCP on DICOM_HOST:DICOM_PORT, and the stable-study watcher."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=None, help="override DICOM_PORT")
        parser.add_argument("--stable-delay", type=int, default=None, help="override DICOM_STABLE_DELAY (seconds)")
        parser.add_argument("--poll", type=int, default=None, help="override DICOM_STABLE_POLL (seconds, 0 = off)")

    def handle(self, *args: Any, **options: Any) -> None:
        from imaging_source.publish import PublishConfig

        dicom = DicomConfig.from_settings(settings)
        publish_config = PublishConfig.from_settings(settings)
        delay = settings.DICOM_STABLE_DELAY if options["stable_delay"] is None else options["stable_delay"]
        poll_interval = settings.DICOM_STABLE_POLL if options["poll"] is None else options["poll"]

        def publish(uid: str, trigger: str) -> None:
            publish_study(uid, dicom, publish_config, trigger=trigger)

        watcher = StableStudyWatcher(delay, lambda uid: publish(uid, "stable"))

        def on_instance(received: ReceivedInstance) -> None:
            if delay > 0:
                watcher.seen(received.study_instance_uid)

        def on_mpps_completed(study_uids: list[str], mpps_uid: str) -> None:
            for uid in study_uids:
                publish(uid, "mpps")

        listener = DicomListener(dicom, state_dir=Path(settings.VAR_DIR) / "dicom", on_instance=on_instance,
                                 on_mpps_completed=on_mpps_completed, port=options["port"])
        host, port = listener.start()
        self.stdout.write(f"dicom listener {dicom.ae_title}@{host}:{port}; stable delay {delay}s; "
                          f"PACS poll {poll_interval or 'off'}; PACS {dicom.pacs}")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            if delay > 0:
                watcher.run(stop, poll=pacs_poller(dicom) if poll_interval > 0 else None,
                            poll_interval=float(poll_interval))
            else:
                stop.wait()
        finally:
            listener.stop()
            self.stdout.write("dicom listener stopped")
