"""Run the Imaging Document Source's DICOM listener (one long-running process).

C-STORE SCP (C-MOVE destination for RAD-69, and incoming instances for stable-study
detection), MPPS SCP (COMPLETED -> publish; IN PROGRESS -> announced, e.g. for prefetch), C-ECHO,
and the stable-study watcher.
Bounded against hostile peers (settings DICOM_MAX_ASSOCIATIONS, DICOM_MAX_ASSOCIATIONS_PER_AE,
DICOM_MAX_PDU_LENGTH, DICOM_NETWORK_TIMEOUT, DICOM_ACSE_TIMEOUT; imaging_source/dicom/acceptor.py), and
received data sets are reassembled on disk (``<DICOM_SPOOL_DIR>/incoming``), not in memory.
Publication is not done here: MPPS COMPLETED and a stable study queue an
``imaging_source.publish_study`` job (keyed by Study Instance UID) that the job worker
(``manage.py xds_jobs_worker``) runs, so a DIMSE answer never waits on RAD-68.
Every DIMSE transaction logs one line.  Stops cleanly on SIGTERM / Ctrl-C.

Secure node (issue 13, :mod:`imaging_source.dicom.admission`): with XDS_TLS on the listener speaks DICOM TLS
only (PS3.15 B.10, this node's XDS_TLS_CERT/KEY, peers verified against XDS_TLS_CA / XDS_TLS_PINNED; the
handshake bounded by DICOM_ACSE_TIMEOUT) and admits a peer only when its certificate is in the node identity
table; with XDS_TLS off, by its Calling AE Title and address once the table has AE-title rows (none: anyone,
with a warning).  The worklist SCP is called over TLS per DICOM_WORKLIST_TLS.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from atna.activity import started
from imaging_source.dicom.admission import PeerAdmission
from imaging_source.dicom.config import DicomConfig, Peer, PeerTls
from imaging_source.dicom.received import disk_reassembly
from imaging_source.dicom.scp import DicomListener, ReceivedInstance
from imaging_source.patient_mapping import parse_rewrite_rules
from imaging_source.procedures import WorklistPoller, announce_procedure, announce_procedure_in_progress
from imaging_source.publication_jobs import enqueue_publication, enqueue_publications
from imaging_source.stable import StableStudyWatcher, pacs_poller
from jobs.registry import Event


class Command(BaseCommand):
    help = "Run the DICOM listener: C-STORE + MPPS SCP on DICOM_HOST:DICOM_PORT, and the stable-study watcher."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=None, help="override DICOM_PORT")
        parser.add_argument("--stable-delay", type=int, default=None, help="override DICOM_STABLE_DELAY (seconds)")
        parser.add_argument("--poll", type=int, default=None, help="override DICOM_STABLE_POLL (seconds, 0 = off)")

    def handle(self, *args: Any, **options: Any) -> None:
        dicom = DicomConfig.from_settings(settings)
        max_attempts = settings.XDS_JOBS_MAX_ATTEMPTS
        delay = settings.DICOM_STABLE_DELAY if options["stable_delay"] is None else options["stable_delay"]
        poll_interval = settings.DICOM_STABLE_POLL if options["poll"] is None else options["poll"]

        def publish_stable(uid: str) -> None:
            # The watcher's thread lives as long as the process: drop a connection the database closed.
            close_old_connections()
            enqueue_publication(uid, trigger="stable", max_attempts=max_attempts)

        watcher = StableStudyWatcher(delay, publish_stable)

        def on_instance(received: ReceivedInstance) -> None:
            if delay > 0:
                watcher.seen(received.study_instance_uid)

        def on_mpps_completed(study_uids: list[str], mpps_uid: str) -> None:
            enqueue_publications(study_uids, trigger="mpps", max_attempts=max_attempts)

        rules = parse_rewrite_rules(settings.XDS_IMAGING_PATIENT_REWRITE)

        def on_mpps_in_progress(ds: Any, mpps_uid: str) -> None:
            announce_procedure_in_progress(ds, mpps_uid, rules, max_attempts=max_attempts)

        from atna.tls import node_server_context

        server_tls = node_server_context()
        admission = PeerAdmission.with_identity_table(server_tls, handshake_timeout=dicom.listener.acse_timeout)
        if server_tls is None and not admission.ae_titles_configured():
            self.stderr.write("warning: XDS_TLS is off and the node identity table has no DICOM AE title row: "
                              "any calling AE may associate (see SECURITY.md)")
        listener = DicomListener(dicom, on_instance=on_instance, on_mpps_completed=on_mpps_completed,
                                 on_mpps_in_progress=on_mpps_in_progress, port=options["port"], admission=admission)
        poller = None
        if settings.DICOM_WORKLIST:
            def on_scheduled(item: Any, key: str) -> None:
                close_old_connections()
                announce_procedure(Event.PROCEDURE_SCHEDULED, item, key, rules, max_attempts=max_attempts)

            worklist = Peer.from_dict(settings.DICOM_WORKLIST,
                                      tls=PeerTls(settings.DICOM_WORKLIST_TLS).context(dicom.tls))
            poller = WorklistPoller(dicom.ae_title, worklist, on_scheduled,
                                    interval=float(settings.DICOM_WORKLIST_POLL))
        # This process reassembles received data sets on disk, next to the spool (a C-MOVE'd instance
        # is then renamed into it): pynetdicom's switch is process-wide, and this process runs no C-GET.
        with disk_reassembly(Path(dicom.spool_dir) / "incoming"):
            self._serve(listener, poller, watcher, dicom, delay, poll_interval)

    def _serve(self, listener: DicomListener, poller: WorklistPoller | None, watcher: StableStudyWatcher,
               dicom: DicomConfig, delay: int, poll_interval: int) -> None:
        host, port = listener.start()
        self.stdout.write(f"dicom listener {dicom.ae_title}@{host}:{port}; stable delay {delay}s; "
                          f"PACS poll {poll_interval or 'off'}; PACS {dicom.pacs}; "
                          "publication through the job queue (manage.py xds_jobs_worker)")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        started("dicom-listener")  # Application Activity start/stop (atna.activity)
        if poller is not None:
            threading.Thread(target=poller.run, args=(stop,), name="worklist-poller", daemon=True).start()
            self.stdout.write(f"polling the worklist {poller.peer} every {poller.interval:.0f}s")
        try:
            if delay > 0:
                watcher.run(stop, poll=pacs_poller(dicom) if poll_interval > 0 else None,
                            poll_interval=float(poll_interval))
            else:
                stop.wait()
        finally:
            listener.stop()
            self.stdout.write("dicom listener stopped")
