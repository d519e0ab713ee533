"""What this node is and whether its parts answer: the portal's front page and ``/healthz``.

A node's *components* are checked live, each with a short timeout and all at once (threads), so that a
PACS or a registry that is down costs the page at most :data:`TIMEOUT` seconds and is shown as a word
("unreachable: connection refused"), never as an error page:

- ``database``: a trivial query;
- ``pacs``: the PACS's DICOMweb base (QIDO-RS ``/studies?limit=1``) and a C-ECHO to ``DICOM_PACS``;
- ``dicom_listener``: a C-ECHO to our own listener (``DICOM_AE_TITLE@DICOM_HOST:DICOM_PORT``);
- ``registry``: the remote registry's WSDL (``XDS_CONSUMER_REGISTRY_URL``), or the local registry tables;
- ``document_store``: free space of the repository's document store against ``XDS_MIN_FREE_SPACE``
  (below it the repository refuses new documents, so the node is degraded; the free bytes are shown).

A component that is not configured on this node is left out of the verdict.  Counts come from the
tables this node holds.  Peers (the other nodes, ``XDS_PORTAL_PEERS``) are asked for their ``/healthz``;
``/healthz`` itself never asks peers (no recursion between nodes).

Values come in through :class:`NodeConfig` (built from settings by the view); nothing here reads settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

import requests
from django.db import connection

from imaging_source.dicom.config import Peer, PeerTls, node_client_context
from imaging_source.dicom.echo import echo
from xds_core import disk
from xds_core.soap.client import new_session

#: Seconds any one check may take (connect, answer); checks run side by side.
TIMEOUT = 1.5
UP, DOWN, OFF = "up", "down", "not configured"
#: Working, but refusing part of its work (the document store below its free-space watermark).
DEGRADED = "degraded"


@dataclass(frozen=True)
class NodeConfig:
    """The settings the status needs, as values."""

    site_key: str
    site_name: str
    ae_title: str
    listener: Peer | None  # our DICOM listener, when this node runs one
    pacs: Peer | None
    dicomweb_url: str
    imaging_source_id: str
    registry_url: str  # "" = the registry in this server
    repository_url: str  # where our imaging source sends RAD-68; "" = this server's repository
    kos_format_codes: tuple[str, ...] = ()
    peers: tuple[tuple[str, str], ...] = ()
    timeout: float = TIMEOUT
    #: The repository's document directory ("" when its backend keeps no local files) and its watermark.
    document_store: str = ""
    min_free_space: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> NodeConfig:
        """Built from a settings object, passed in by the caller."""
        from xds_repository.conf import document_store_root

        tls = node_client_context(settings)  # under XDS_TLS our C-ECHOs speak DICOM TLS (PS3.15 B.10)
        pacs = (Peer.from_dict(settings.DICOM_PACS, tls=PeerTls(settings.DICOM_PACS_TLS).context(tls))
                if settings.DICOM_PACS else None)
        store_root = document_store_root()
        listener = None
        if getattr(settings, "XDS_RUN_DICOM", True) and pacs is not None:
            # A listener bound to every address is reached on loopback.
            host = settings.DICOM_HOST if settings.DICOM_HOST not in ("", "0.0.0.0", "::") else "127.0.0.1"
            listener = Peer(settings.DICOM_AE_TITLE, host, settings.DICOM_PORT, tls)
        return cls(site_key=settings.XDS_SITE_KEY, site_name=settings.XDS_SITE_NAME,
                   ae_title=settings.DICOM_AE_TITLE, listener=listener, pacs=pacs,
                   dicomweb_url=settings.DICOMWEB_URL or "", imaging_source_id=settings.XDS_IMAGING_SOURCE_ID,
                   registry_url=settings.XDS_CONSUMER_REGISTRY_URL or "",
                   repository_url=settings.XDS_REPOSITORY_URL or "",
                   kos_format_codes=tuple(settings.XDS_CONSUMER_KOS_FORMAT_CODES),
                   peers=tuple(tuple(p) for p in settings.XDS_PORTAL_PEERS),  # type: ignore[misc]
                   document_store=str(store_root) if store_root is not None else "",
                   min_free_space=settings.XDS_MIN_FREE_SPACE)

    @property
    def registry_here(self) -> bool:
        """This node's registry tables are the affinity domain's (its consumer queries itself)."""
        return not self.registry_url

    @property
    def repository_here(self) -> bool:
        return not self.repository_url

    @property
    def imaging_source(self) -> bool:
        """An Imaging Document Source runs here: a PACS to serve RAD-69 from, and a Retrieve Location UID."""
        return bool((self.dicomweb_url or self.pacs) and self.imaging_source_id)


@dataclass
class Check:
    """One live check: ``state`` up / down / not configured, ``detail`` in words."""

    state: str
    detail: str = ""
    target: str = ""  # what was asked (URL, AE@host:port): no patient data
    ms: int = 0
    parts: dict[str, Check] = field(default_factory=dict)
    #: Measured figures worth a number in the JSON (e.g. free_bytes); left out when empty.
    figures: dict[str, int] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return self.state == UP

    def as_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("parts", "figures")}
        if self.figures:
            out.update(self.figures)
        if self.parts:
            out["parts"] = {name: part.as_json() for name, part in self.parts.items()}
        return out


def _timed(check: Callable[[], Any]) -> Any:
    """Run a check (a :class:`Check`, or a peer's :class:`PeerStatus`); one that raises is a down Check."""
    started = time.monotonic()
    try:
        result = check()
    except Exception as exc:  # noqa: BLE001 - a check that fails is a state, never a 500
        result = Check(DOWN, f"check failed: {type(exc).__name__}")
    if isinstance(result, Check):
        result.ms = int((time.monotonic() - started) * 1000)
    return result


def http_words(exc: requests.RequestException) -> str:
    """A failed HTTP request in words."""
    if isinstance(exc, requests.Timeout):
        return "unreachable: timed out"
    if isinstance(exc, requests.ConnectionError):
        text = str(exc).lower()
        if "refused" in text:
            return "unreachable: connection refused"
        if "name or service" in text or "nodename" in text or "resolve" in text:
            return "unreachable: unknown host"
        return "unreachable: connection failed"
    return f"failed: {type(exc).__name__}"


def http_check(url: str, timeout: float, *, ok_statuses: tuple[int, ...] = (200, 204)) -> Check:
    try:
        # One request, no keep-alive: nothing of a status check lingers in the peer's server.  A session of
        # new_session(): under XDS_TLS an https:// peer sees this node's certificate (ITI-19).
        with new_session() as session:
            answer = session.get(url, timeout=timeout, headers={"Accept": "application/dicom+json, */*",
                                                                "Connection": "close"})
    except requests.RequestException as exc:
        return Check(DOWN, http_words(exc), url)
    if answer.status_code in ok_statuses:
        return Check(UP, f"HTTP {answer.status_code}", url)
    return Check(DOWN, f"answered HTTP {answer.status_code}", url)


def echo_check(calling_ae: str, peer: Peer, timeout: float) -> Check:
    result = echo(calling_ae, peer, timeout)
    return Check(UP if result.ok else DOWN, result.detail if result.ok else f"unreachable: {result.detail}",
                 str(peer))


def _combine(parts: dict[str, Check], target: str = "") -> Check:
    """One component of several checks: up when every part is up."""
    if not parts:
        return Check(OFF)
    down = [f"{name}: {part.detail}" for name, part in parts.items() if not part.up]
    state = DOWN if down else UP
    detail = "; ".join(down) if down else ", ".join(f"{name} {part.detail}" for name, part in parts.items())
    return Check(state, detail, target, max(p.ms for p in parts.values()), parts)


@dataclass
class _Running:
    futures: dict[str, Future[Any]]
    started: float
    pool: ThreadPoolExecutor | None


def _start_all(checks: dict[str, Callable[[], Any]]) -> _Running:
    """Start ``checks`` side by side, each in a thread of its own."""
    if not checks:
        return _Running({}, time.monotonic(), None)
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="portal-status")
    return _Running({name: pool.submit(_timed, check) for name, check in checks.items()}, time.monotonic(), pool)


def _collect(running: _Running, timeout: float) -> dict[str, Any]:
    """The checks' results; one still running ``timeout`` (+ a margin) after the start is reported down."""
    limit = timeout + 0.5
    wait(running.futures.values(), timeout=max(0.0, limit - (time.monotonic() - running.started)))
    if running.pool is not None:
        running.pool.shutdown(wait=False)  # a straggler finishes in its thread (its own timeouts); nobody waits
    return {name: future.result() if future.done() else Check(
        DOWN, f"unreachable: no answer within {timeout:g} s", ms=int(limit * 1000))
        for name, future in running.futures.items()}


def database_check() -> Check:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - a database that is down is a state
        return Check(DOWN, f"unreachable: {type(exc).__name__}", ms=int((time.monotonic() - started) * 1000))
    return Check(UP, f"{connection.vendor}", ms=int((time.monotonic() - started) * 1000))


def document_store_check(directory: str, min_free_space: int) -> Check:
    """Free space of the document store's file system: degraded below the watermark (new documents are
    refused there with XDSRepositoryOutOfResources), down if it cannot be measured."""
    if not directory:
        return Check(OFF)
    started = time.monotonic()
    try:
        room = disk.room(directory, watermark=min_free_space)
    except OSError as exc:
        return Check(DOWN, f"free space unknown: {exc.strerror}", directory,
                     int((time.monotonic() - started) * 1000))
    ms = int((time.monotonic() - started) * 1000)
    figures = {"free_bytes": room.free, "min_free_bytes": min_free_space}
    if not room.enough:
        return Check(DEGRADED, f"low on space: {room.free} bytes free, below the watermark of {min_free_space} "
                               "bytes; new documents are refused", directory, ms, figures=figures)
    return Check(UP, f"{room.free} bytes free", directory, ms, figures=figures)


def counts(config: NodeConfig) -> dict[str, int]:
    """Counts of what this node holds (no patient data): registry tables only where the registry is here."""
    from imaging_source.models import ReconciliationItem
    from jobs.models import Job, JobState

    out: dict[str, int] = {}
    if config.registry_here:
        from xds_registry.models import DocumentEntry, Patient

        out["patients"] = Patient.objects.count()
        out["documents"] = DocumentEntry.objects.count()
        out["manifests"] = DocumentEntry.objects.filter(format_code__in=config.kos_format_codes).count()
    if config.imaging_source:
        out["pending_reconciliations"] = ReconciliationItem.objects.filter(
            status=ReconciliationItem.Status.OPEN).count()
    out["queued_jobs"] = Job.objects.filter(state=JobState.QUEUED).count()
    out["running_jobs"] = Job.objects.filter(state=JobState.RUNNING).count()
    return out


@dataclass
class NodeStatus:
    config: NodeConfig
    components: dict[str, Check]
    counts: dict[str, int]
    peers: list[PeerStatus] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.up for c in self.components.values() if c.state != OFF)

    def healthz(self, version: str = "") -> dict[str, Any]:
        """The ``/healthz`` document: no patient data, no transactions."""
        site = {"key": self.config.site_key, "name": self.config.site_name}
        if version:
            site["version"] = version
        return {"status": "ok" if self.ok else "degraded", "site": site,
                "components": {name: c.as_json() for name, c in self.components.items()}, "counts": self.counts}


@dataclass
class PeerStatus:
    name: str
    url: str
    state: str  # up (answered ok), degraded (answered 503), down (no usable answer)
    detail: str = ""
    site: dict[str, Any] = field(default_factory=dict)
    components: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def portal_url(self) -> str:
        return f"{self.url}/"


def peer_status(name: str, url: str, timeout: float) -> PeerStatus:
    """Ask a peer node for its ``/healthz`` (a 503 still carries its document)."""
    try:
        with new_session() as session:  # our certificate presented under XDS_TLS (ITI-19)
            answer = session.get(f"{url}/healthz", timeout=timeout, headers={"Accept": "application/json",
                                                                             "Connection": "close"})
    except requests.RequestException as exc:
        return PeerStatus(name, url, DOWN, http_words(exc))
    try:
        document = answer.json()
        if not isinstance(document, dict) or document.get("status") not in ("ok", "degraded"):
            raise ValueError("not a /healthz document")
    except ValueError:
        return PeerStatus(name, url, DOWN, f"answered HTTP {answer.status_code}, not a /healthz document")
    state = UP if document["status"] == "ok" and answer.status_code == 200 else "degraded"

    def _dict(key: str) -> dict[str, Any]:
        value = document.get(key)
        return value if isinstance(value, dict) else {}

    counts = {k: v for k, v in _dict("counts").items() if isinstance(k, str) and isinstance(v, int)}
    components = {k: v for k, v in _dict("components").items() if isinstance(v, dict)}
    return PeerStatus(name, url, state, f"HTTP {answer.status_code}", _dict("site"), components, counts)


def node_status(config: NodeConfig, *, with_peers: bool = False) -> NodeStatus:
    """Every component's state (network checks side by side, at most ~``config.timeout`` s), the
    counts, and with ``with_peers`` the peers' ``/healthz`` (asked at the same time)."""
    t = config.timeout
    checks: dict[str, Callable[[], Any]] = {}
    pacs_checks: list[str] = []
    if config.imaging_source and config.dicomweb_url:
        checks["pacs:dicomweb"] = lambda: http_check(f"{config.dicomweb_url.rstrip('/')}/studies?limit=1", t)
        pacs_checks.append("pacs:dicomweb")
    if config.imaging_source and config.pacs is not None:
        pacs = config.pacs
        checks["pacs:dimse"] = lambda: echo_check(config.ae_title, pacs, t)
        pacs_checks.append("pacs:dimse")
    if config.imaging_source and config.listener is not None:
        listener = config.listener
        checks["dicom_listener"] = lambda: echo_check(config.ae_title, listener, t)
    if config.registry_url:
        checks["registry"] = lambda: http_check(f"{config.registry_url}?wsdl", t, ok_statuses=(200,))
    if with_peers:
        for index, (name, url) in enumerate(config.peers):
            checks[f"peer:{index}"] = (lambda n=name, u=url: peer_status(n, u, t))  # type: ignore[misc]
    # The network checks run in threads; the database (and counts) in this thread meanwhile: a Django
    # connection belongs to its thread.
    pool = _start_all(checks)
    database = _timed(database_check)
    try:
        node_counts = counts(config) if database.up else {}
    except Exception as exc:  # noqa: BLE001 - e.g. tables missing before migrate: a state, not a 500
        database = Check(DOWN, f"query failed: {type(exc).__name__}", ms=database.ms)
        node_counts = {}
    results = _collect(pool, t)
    components: dict[str, Check] = {"database": database}
    components["pacs"] = _combine({name.split(":", 1)[1]: results[name] for name in pacs_checks},
                                  str(config.pacs or config.dicomweb_url))
    components["dicom_listener"] = results.get("dicom_listener", Check(OFF))
    components["document_store"] = _timed(lambda: document_store_check(config.document_store, config.min_free_space))
    if config.registry_url:
        components["registry"] = results["registry"]
    else:  # the registry is this node's own tables
        components["registry"] = Check(database.state, "in this server (local tables)", "local:", database.ms)
    peers = []
    for index in range(len(config.peers) if with_peers else 0):
        value = results[f"peer:{index}"]
        if isinstance(value, Check):  # the check outlived its timeout, or crashed
            name, url = config.peers[index]
            value = PeerStatus(name, url, DOWN, value.detail)
        peers.append(value)
    return NodeStatus(config, components, node_counts, peers)
