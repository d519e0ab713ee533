"""Configuration of the DICOM side, passed into domain code as a value (never read from settings here)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class FetchMethod(StrEnum):
    """How RAD-69 gets instances out of the PACS."""

    C_GET = "c-get"      # DIMSE C-GET: the instances come back on our own association (no listener needed)
    C_MOVE = "c-move"    # DIMSE C-MOVE to our C-STORE SCP (the listener process), correlated by SOP UID
    WADO_RS = "wado-rs"  # DICOMweb WADO-RS (needs DICOMWEB_URL); fastest (measured on this project's machine:
    #                      a 500-instance study in 0.083 s whole-study, ≈ 2.4 s by C-GET or C-MOVE)


@dataclass(frozen=True)
class Peer:
    """A remote (or our own) DICOM application entity.

    ``tls``: the client context to speak to it with (PS3.15 B.10 / ITI-19: our certificate presented, its
    certificate verified; :func:`xds_core.tls.client_context`), None for plain TCP.  Every association we
    request of a peer goes through :func:`imaging_source.dicom.ae.associate`, which honours it.
    """

    ae_title: str
    host: str
    port: int
    tls: ssl.SSLContext | None = None

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    @property
    def tls_args(self) -> tuple[ssl.SSLContext, str] | None:
        """pynetdicom's ``tls_args`` of ``associate()``: the context and the server name (SNI, and the
        name checked when the context verifies host names, ITI-19 3.19.6.1.4)."""
        return (self.tls, self.host) if self.tls is not None else None

    @classmethod
    def from_dict(cls, value: dict[str, Any], *, tls: ssl.SSLContext | None = None) -> Peer:
        return cls(value["ae_title"], value["host"], int(value["port"]), tls)


class PeerTls(StrEnum):
    """Whether a configured DICOM peer speaks TLS (settings ``DICOM_PACS_TLS``, ``DICOM_WORKLIST_TLS``)."""

    NODE = "node"  # as this node: TLS when XDS_TLS is on
    ON = "on"
    OFF = "off"  # a peer on a secured network segment that cannot do TLS (a legacy modality)

    def context(self, node_client_context: ssl.SSLContext | None) -> ssl.SSLContext | None:
        """The client context for such a peer; ``on`` without a node context is a configuration error."""
        if self is PeerTls.OFF:
            return None
        if self is PeerTls.ON and node_client_context is None:
            raise ValueError("a DICOM peer is configured for TLS but XDS_TLS is off (no certificate to present)")
        return node_client_context


@dataclass(frozen=True)
class ListenerLimits:
    """Bounds of our DICOM listener against peers that hold, flood or oversize (acceptor.py)."""

    #: Associations open at once, in total and per Calling AE Title (beyond: A-ASSOCIATE-RJ
    #: rejected-transient / local-limit-exceeded, PS3.8 Table 9-21).
    max_associations: int = 64
    max_associations_per_ae: int = 16
    #: Maximum Length we advertise for P-DATA-TF PDUs (PS3.8 D.1) and enforce (pdu_limits.py).
    max_pdu_length: int = 1024 * 1024
    #: Seconds an association may stay silent (idle, or stalled inside a PDU) before it is aborted.
    network_timeout: float = 60.0
    #: Seconds for association negotiation (ARTIM: a connection without A-ASSOCIATE-RQ is closed).
    acse_timeout: float = 30.0
    #: Bytes that must stay free on the spool's file system: below, a C-MOVE'd instance is refused with
    #: 0xA700 Out of Resources (PS3.4 Table B.2-1) instead of filling the disk (0: no check).
    min_free_space: int = 0


@dataclass(frozen=True)
class DicomConfig:
    """Everything the DICOM code needs; built by the view/command layer from settings."""

    ae_title: str
    pacs: Peer
    dicomweb_url: str = ""
    fetch_method: FetchMethod = FetchMethod.C_GET
    #: Our own SCP (C-STORE destination of C-MOVE, MPPS SCP).
    scp_host: str = "127.0.0.1"
    scp_port: int = 11112
    #: Where C-MOVE'd instances are spooled by the listener and picked up by RAD-69.
    spool_dir: Path = Path("var/dicom/spool")
    timeouts: dict[str, float] = field(default_factory=dict)
    listener: ListenerLimits = field(default_factory=ListenerLimits)
    #: This node's outbound TLS context (ITI-19): an ``https`` DICOMWEB_URL is called with it (our
    #: certificate presented).  The DIMSE peers carry their own (:attr:`Peer.tls`).
    tls: ssl.SSLContext | None = None

    @property
    def use_dicomweb(self) -> bool:
        return bool(self.dicomweb_url)

    @classmethod
    def from_settings(cls, settings: Any, *, tls: ssl.SSLContext | None | bool = True) -> DicomConfig:
        """Build from a settings object (``django.conf.settings``), passed in by the caller.

        ``tls``: this node's client context (None: plain); True (the default) asks ``atna.tls`` for it when
        XDS_TLS is on.  ``DICOM_PACS_TLS`` may turn it off (or insist on it) for the PACS.
        """
        method = getattr(settings, "DICOM_FETCH_METHOD", "") or (
            FetchMethod.WADO_RS if settings.DICOMWEB_URL else FetchMethod.C_GET)
        context = node_client_context(settings) if tls is True else tls or None
        return cls(
            ae_title=settings.DICOM_AE_TITLE,
            pacs=Peer.from_dict(settings.DICOM_PACS,
                                tls=PeerTls(getattr(settings, "DICOM_PACS_TLS", "node")).context(context)),
            dicomweb_url=settings.DICOMWEB_URL.rstrip("/"),
            tls=context,
            fetch_method=FetchMethod(method),
            scp_host=getattr(settings, "DICOM_HOST", "127.0.0.1"),
            scp_port=settings.DICOM_PORT,
            spool_dir=Path(getattr(settings, "DICOM_SPOOL_DIR", Path(settings.VAR_DIR) / "dicom" / "spool")),
            listener=ListenerLimits(
                max_associations=getattr(settings, "DICOM_MAX_ASSOCIATIONS", ListenerLimits.max_associations),
                max_associations_per_ae=getattr(settings, "DICOM_MAX_ASSOCIATIONS_PER_AE",
                                                ListenerLimits.max_associations_per_ae),
                max_pdu_length=getattr(settings, "DICOM_MAX_PDU_LENGTH", ListenerLimits.max_pdu_length),
                network_timeout=float(getattr(settings, "DICOM_NETWORK_TIMEOUT", ListenerLimits.network_timeout)),
                acse_timeout=float(getattr(settings, "DICOM_ACSE_TIMEOUT", ListenerLimits.acse_timeout)),
                min_free_space=getattr(settings, "XDS_MIN_FREE_SPACE", ListenerLimits.min_free_space),
            ),
        )


def node_client_context(settings: Any) -> ssl.SSLContext | None:
    """This node's outbound TLS context when ``settings.XDS_TLS`` is on, else None (the edge: ``atna.tls``)."""
    if getattr(settings, "XDS_TLS", "off") == "off":
        return None
    from atna.tls import node_client_context as from_atna  # a Django app: only when TLS is on

    return from_atna()
