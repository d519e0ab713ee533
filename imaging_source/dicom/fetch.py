"""Fetch instances from the PACS for RAD-69: C-GET, C-MOVE to our SCP, or WADO-RS.

Every method works per series - one C-GET / C-MOVE (IMAGE level, list of SOP Instance
UIDs, PS3.4 C.4.2.2.1 / C.4.3.2.1) or one WADO-RS series request - never one association
or request per instance: per-instance retrieval is ~28x slower on Orthanc (measured on
this project's machine).  All the series of one RAD-69 request share one association.
This module chooses the method (:class:`FetchStream`); the methods live in
:mod:`.wado_rs` and :mod:`.dimse_retrieve`, what they deliver in :mod:`.instances`.

Instances are returned as :class:`FetchedInstance` (Part 10 bytes, held in memory up to
``memory_limit`` and spilled to files in ``spool_dir`` beyond), keyed by SOP Instance UID;
instances the PACS returned but nobody asked for are dropped.  Nothing is decoded here:
the transfer syntax and UIDs come from the Part 10 file meta (parsed by hand, a few
microseconds per instance) or from the DIMSE command.

Every method keeps the same time rules (:class:`~imaging_source.dicom.instances.PacsDeadlines`:
time to the PACS's first byte, then silence between two of its reads / PDUs); a broken rule raises
:class:`~imaging_source.dicom.instances.PacsTimeout` and the whole fetch ends, with nothing it
collected and did not hand out left in memory or spill files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from imaging_source.dicom.config import DicomConfig, FetchMethod
from imaging_source.dicom.dimse_retrieve import fetch_c_get, fetch_c_move
from imaging_source.dicom.instances import (
    DEFAULT_DEADLINES,
    DEFAULT_MEMORY_LIMIT,
    Collector,
    FetchedInstance,
    FetchError,
    FetchResult,
    PacsDeadlines,
    SeriesFetch,
)
from imaging_source.dicom.wado_rs import RequestAhead, fetch_wado

logger = logging.getLogger(__name__)


def fetch(config: DicomConfig, series: Sequence[SeriesFetch], *, accept_transfer_syntaxes: Sequence[str] = (),
          memory_limit: int = DEFAULT_MEMORY_LIMIT, method: FetchMethod | None = None,
          deadlines: PacsDeadlines = DEFAULT_DEADLINES) -> FetchResult:
    """Fetch the requested instances, grouped by series, with the configured (or given) method.

    ``accept_transfer_syntaxes``: the transfer syntaxes the caller would like, so that a
    DIMSE fetch can let the PACS send its stored encoding when it is one of them.
    """
    stream = FetchStream(config, series, accept_transfer_syntaxes=accept_transfer_syntaxes,
                         memory_limit=memory_limit, method=method, deadlines=deadlines)
    for _ in stream:
        pass
    return stream.result


class FetchStream:
    """The same fetch, as an iterator of ``((series UID, SOP UID), FetchedInstance)`` in arrival order.

    WADO-RS yields each instance as soon as its part is complete; C-GET / C-MOVE yield a
    series' instances when its retrieve ends.  ``result`` (all instances + series failures)
    is complete once the iterator is exhausted; a consumer that streams the content on
    hands each instance back to :meth:`release` once sent.
    """

    def __init__(self, config: DicomConfig, series: Sequence[SeriesFetch], *,
                 accept_transfer_syntaxes: Sequence[str] = (), memory_limit: int = DEFAULT_MEMORY_LIMIT,
                 method: FetchMethod | None = None, ahead: RequestAhead | None = None,
                 wado_transfer_syntax: str | None = None, deadlines: PacsDeadlines = DEFAULT_DEADLINES) -> None:
        """``ahead``: a request already sent by :func:`send_ahead`; used if it is this fetch's first one.

        ``wado_transfer_syntax``: WADO-RS asks the PACS for the instances in this syntax (it
        transcodes; as stored if it refuses), else as stored.  C-GET / C-MOVE ignore it.
        ``deadlines``: the PACS's time rules, for every method.
        """
        self.config = config
        self.series = list(series)
        self.accept = list(accept_transfer_syntaxes)
        self.method = method or config.fetch_method
        self.wanted = [(s.series_instance_uid, uid) for s in self.series for uid in s.sop_instance_uids]
        studies: dict[str, set[str]] = {}
        for s in self.series:
            studies.setdefault(s.series_instance_uid, set()).add(s.study_instance_uid)
        self.collector = Collector(self.wanted, memory_limit, Path(config.spool_dir) / "tmp", studies)
        self._ahead = ahead
        self.wado_transfer_syntax = wado_transfer_syntax
        self.deadlines = deadlines

    @property
    def result(self) -> FetchResult:
        return self.collector.result

    def release(self, instance: FetchedInstance) -> None:
        """Forget an instance the consumer has passed on (streaming): the memory it held no longer
        counts against ``memory_limit``, so a study larger than the limit streams through memory
        instead of spilling everything past the limit to files."""
        self.collector.release(instance)

    def close(self) -> None:
        """Drop a request sent ahead and never read (its connection goes)."""
        if self._ahead is not None:
            self._ahead.cancel()
            self._ahead = None

    def __iter__(self) -> Iterator[tuple[tuple[str, str], FetchedInstance]]:
        started = time.perf_counter()
        try:
            yield from self._instances()
        finally:
            result = self.collector.result
            logger.info("dicom fetch method=%s series=%d requested=%d delivered=%d failed_series=%d ms=%.1f",
                        self.method, len(self.series), len(self.wanted), len(result.instances),
                        len(result.failures), (time.perf_counter() - started) * 1000)

    def _instances(self) -> Iterator[tuple[tuple[str, str], FetchedInstance]]:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and self.method != FetchMethod.WADO_RS:
            ahead.cancel()
            ahead = None
        if self.method == FetchMethod.WADO_RS:
            if not self.config.dicomweb_url:
                raise FetchError("fetch method wado-rs needs DICOMWEB_URL")
            # Instance by instance, straight from the reading loop (nothing else adds to the collector).
            yield from fetch_wado(self.config, self.series, self.collector, ahead, self.wado_transfer_syntax,
                                  self.deadlines)
        else:
            # A DIMSE retrieve delivers on pynetdicom's threads: take what has arrived at each step.
            steps = (fetch_c_get(self.config, self.series, self.collector, self.accept, self.deadlines)
                     if self.method == FetchMethod.C_GET
                     else fetch_c_move(self.config, self.series, self.collector, self.deadlines))
            pending: list[tuple[tuple[str, str], FetchedInstance]] = []
            try:
                for _ in steps:
                    pending = self.collector.take_new()
                    while pending:
                        yield pending.pop(0)
                pending = self.collector.take_new()
                while pending:
                    yield pending.pop(0)
            except BaseException:
                # A failed fetch (a PACS timeout, a dropped association) or a consumer that gave up: what
                # arrived but was never handed out is nobody's - its spill files go now, not at a sweep.
                for _key, instance in [*pending, *self.collector.take_new()]:
                    self.collector.release(instance)
                raise
