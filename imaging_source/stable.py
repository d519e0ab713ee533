""""Study stable" publication, for PACSs (and modalities) without MPPS.

A study counts as stable once no new instance has been seen for ``delay`` seconds; it is
then handed to ``publish(study_uid)``.  The listener command makes that queue an
``imaging_source.publish_study`` job (:mod:`imaging_source.publication_jobs`); the job worker
runs :func:`publish_study` (RAD-68 through :func:`imaging_source.publish.publish`, which sends
an original, a replacement when the instance set changed, or nothing when unchanged).

Activity comes from two sources:

- our C-STORE SCP (:class:`imaging_source.dicom.scp.DicomListener` ``on_instance``): a modality
  or the PACS forwarding to us - each received instance marks its study as active;
- polling the PACS (``poll_interval`` > 0): a STUDY-level C-FIND / QIDO-RS for Number of Study
  Related Instances; a count that changed (or a new study) marks the study as active.  The
  first poll only takes the baseline, so starting the listener does not republish the PACS.

State is in memory: after a restart, studies still in flight are seen again by the next
instance or poll; ``manage.py xds_publish --since`` covers anything missed while down.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from imaging_source.dicom.config import DicomConfig
from imaging_source.dicom.find import FindError, find_study, study_instance_counts
from xds_core.log_ref import log_ref, redact

logger = logging.getLogger("imaging_source.stable")


class StableStudyWatcher:
    """Tracks last activity per study and hands stable ones to ``publish(study_uid)``."""

    def __init__(self, delay: float, publish: Callable[[str], Any], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.delay = delay
        self.publish = publish
        self.clock = clock
        self._last_seen: dict[str, float] = {}
        self._counts: dict[str, int] | None = None
        self._lock = threading.Lock()

    def seen(self, study_uid: str, when: float | None = None) -> None:
        """Record activity (an instance received or a count change) for ``study_uid``."""
        if not study_uid:
            return
        with self._lock:
            self._last_seen[study_uid] = self.clock() if when is None else when

    def observe_counts(self, counts: dict[str, int]) -> list[str]:
        """Feed a poll result {study UID: instance count}; returns the studies that changed."""
        with self._lock:
            previous, self._counts = self._counts, dict(counts)
        if previous is None:
            return []  # baseline
        changed = [uid for uid, n in counts.items() if previous.get(uid) != n]
        for uid in changed:
            self.seen(uid)
        return changed

    def pending(self) -> dict[str, float]:
        with self._lock:
            return dict(self._last_seen)

    def due(self) -> list[str]:
        """Studies quiet for at least ``delay`` seconds (removed from the watch list)."""
        now = self.clock()
        with self._lock:
            ready = [uid for uid, last in self._last_seen.items() if now - last >= self.delay]
            for uid in ready:
                del self._last_seen[uid]
        return ready

    def run_once(self) -> list[str]:
        """Publish every study that became stable; returns their UIDs."""
        ready = self.due()
        for uid in ready:
            try:
                self.publish(uid)
            except Exception:  # noqa: BLE001 - one failing study must not stop the others
                logger.exception("stable publish of %s failed", log_ref(uid))
        return ready

    def run(self, stop: threading.Event, *, tick: float = 1.0, poll: Callable[[], dict[str, int]] | None = None,
            poll_interval: float = 0.0) -> None:
        """Loop until ``stop`` is set: poll the PACS every ``poll_interval`` s (if given), publish stable studies."""
        next_poll = 0.0
        while not stop.is_set():
            if poll is not None and poll_interval > 0 and self.clock() >= next_poll:
                next_poll = self.clock() + poll_interval
                try:
                    changed = self.observe_counts(poll())
                    if changed:
                        logger.info("stable poll changed=%d studies=%s", len(changed), ",".join(changed[:10]))
                except (FindError, ConnectionError, OSError) as exc:
                    logger.warning("stable poll of the PACS failed: %s", redact(exc))
            self.run_once()
            stop.wait(tick)


def pacs_poller(config: DicomConfig, *, days: int = 2) -> Callable[[], dict[str, int]]:
    """A poll function: instance counts of the studies dated within the last ``days`` days."""

    def poll() -> dict[str, int]:
        since = dt.date.today() - dt.timedelta(days=days)
        return study_instance_counts(config, since=since)

    return poll


def publish_study(study_uid: str, dicom: DicomConfig, publish_config: Any, *, trigger: str) -> Any:
    """Find the study in the PACS and publish it (the ``imaging_source.publish_study`` job of the MPPS
    and stable-study triggers).

    Returns the :class:`imaging_source.publish.PublishResult`, or None when the PACS does not
    (yet) know the study.  The publish module is imported lazily: the DICOM side must not pull
    in the publication stack (models, KOS builder) just to be imported.
    """
    from imaging_source.publish import publish

    study = find_study(study_uid, dicom)
    if study is None or study.instance_count == 0:
        logger.warning("publish trigger=%s study=%s: not found in the PACS", trigger, log_ref(study_uid))
        return None
    result = publish(study, publish_config, trigger=trigger)
    logger.info("publish trigger=%s study=%s outcome=%s", trigger, log_ref(study_uid), getattr(result, "outcome", "?"))
    return result
