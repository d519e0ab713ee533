"""ITI-19 Authenticate Node: the one TLS profile of every listener and client of the suite.

ITI TF-2a 3.19.6.2.3 "STX: TLS 1.2 Floor using BCP195" (the DICOM "Non-Downgrading BCP 195 TLS Secure
Transport Connection Profile", PS3.15 B.10): TLS 1.2 or higher only (1.0 / 1.1 refused, RFC 8996), the four
suites IHE names -- TLS_{DHE,ECDHE}_RSA_WITH_AES_{128_GCM_SHA256,256_GCM_SHA384} -- plus stronger ones (ECDSA
keys, ChaCha20; TLS 1.3's own suites stay on), no compression, no renegotiation.

Mutual authentication (3.19.6.1): both ends present a certificate, and a peer's certificate is accepted when it
chains to a configured CA *or* is one of a configured set of pinned certificates (3.19.6.1.1 / .2; a pinned
certificate may be self-signed or a leaf of a CA we do not trust: ``VERIFY_X509_PARTIAL_CHAIN`` makes every
certificate of the trust store an anchor).  DER and PEM files are both read (3.19.6.1: "DER and BER").
Which peer this is, and what it may do, is not decided here: the verified certificate is handed on as a
:class:`~xds_core.identity.PeerCertificate` and looked up in the node identity table (``atna``).

Nothing here reads settings: the edge builds a :class:`TlsSettings` (``atna.tls.node_tls()``) and passes it.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from requests.adapters import HTTPAdapter

from xds_core.identity import PeerCertificate

#: ITI TF-2a 3.19.6.2.3: the four required suites first, then stronger TLS 1.2 suites (ECDSA, ChaCha20).
#: TLS 1.3 suites are not governed by this string (OpenSSL 3) and stay enabled.
CIPHERS = ":".join((
    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-ECDSA-CHACHA20-POLY1305",
))

#: RFC 7919 ffdhe2048 group: the DHE suites IHE requires need DH parameters on the server side, and
#: OpenSSL (through Python's ssl) does not choose any by itself.
_DH_PARAMS = Path(__file__).resolve().parent / "data" / "ffdhe2048.pem"

#: The WSGI environ key under which the web server hands the verified client certificate (a PeerCertificate)
#: to the application (config.http_worker; read by atna.middleware and the SOAP endpoint's audit record).
ENVIRON_PEER_CERTIFICATE = "xds.peer_certificate"

_TLS_OPTIONS = ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION


class TlsConfigurationError(ValueError):
    """A certificate, key or trust file that cannot be used (raised at start-up, never per connection)."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """This node's TLS identity and trust.

    ``enabled`` False: plain TCP everywhere (local development).  ``cert``/``key``: our certificate (with its
    chain) and private key, PEM.  ``ca``: CA certificates a peer may chain to.  ``pinned``: certificates a peer
    may present as they are (files or directories of ``.pem``/``.crt``/``.der``/``.cer``).  ``verify_hostname``:
    the FQDN Validation of Server Certificate option (3.19.6.1.4), for outbound connections.
    """

    enabled: bool = False
    cert: str = ""
    key: str = ""
    ca: tuple[str, ...] = ()
    pinned: tuple[str, ...] = ()
    verify_hostname: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def problems(self) -> list[str]:
        """What keeps these settings from working (all findings, not the first)."""
        if not self.enabled:
            return []
        found = []
        if not self.cert:
            found.append("no certificate (XDS_TLS_CERT)")
        if not self.key:
            found.append("no private key (XDS_TLS_KEY)")
        if not self.ca and not self.pinned:
            found.append("no trust: neither a CA (XDS_TLS_CA) nor pinned certificates (XDS_TLS_PINNED)")
        for path in (self.cert, self.key, *self.ca, *self.pinned):
            if path and not Path(path).exists():
                found.append(f"{path}: no such file or directory")
        return found


def _trust_files(paths: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir()
                                if p.is_file() and p.suffix.lower() in (".pem", ".crt", ".der", ".cer")))
        else:
            files.append(path)
    return files


def _load_trust(context: ssl.SSLContext, settings: TlsSettings) -> None:
    loaded = 0
    for path in _trust_files((*settings.ca, *settings.pinned)):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise TlsConfigurationError(f"{path}: {exc.strerror}") from None
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                context.load_verify_locations(cadata=data.decode("ascii", "replace"))
            else:  # DER (3.19.6.1.1: DER and BER encodings are accepted)
                context.load_verify_locations(cadata=data)
        except (ssl.SSLError, ValueError) as exc:
            raise TlsConfigurationError(f"{path}: not a certificate ({exc})") from None
        loaded += 1
    if not loaded:
        raise TlsConfigurationError("no trusted certificate: set XDS_TLS_CA and/or XDS_TLS_PINNED")
    # A pinned certificate is an anchor by itself, whether or not it is self-signed (3.19.6.1.2).
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN


def _profile(context: ssl.SSLContext, settings: TlsSettings) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # 3.19.6.2.3; RFC 8996 retired 1.0 and 1.1
    context.options |= _TLS_OPTIONS
    context.set_ciphers(CIPHERS)
    try:
        context.load_cert_chain(settings.cert, settings.key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigurationError(f"certificate {settings.cert} / key {settings.key}: {exc}") from None
    _load_trust(context, settings)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual authentication, 3.19.6
    return context


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context of a listener: our certificate, a client certificate required and verified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_dh_params(str(_DH_PARAMS))
    return _profile(context, settings)


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context of an outbound connection: our certificate presented, the server's verified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # set before verify_mode; hostname checking is an option (3.19.6.1.4)
    _profile(context, settings)
    context.check_hostname = settings.verify_hostname
    return context


@functools.lru_cache(maxsize=1024)
def _parse(der: bytes) -> PeerCertificate:
    return PeerCertificate.from_der(der)


def peer_certificate(sock: ssl.SSLSocket | ssl.SSLObject) -> PeerCertificate | None:
    """The verified certificate of the peer of a TLS socket after its handshake, or None (no TLS, none sent).

    Parsed certificates are cached by their DER bytes: one peer's many connections parse it once.
    """
    try:
        der = sock.getpeercert(binary_form=True)
    except (ValueError, AttributeError):  # not connected / handshake not done / plain socket
        return None
    return _parse(der) if der else None


class TlsAdapter(HTTPAdapter):
    """A ``requests`` adapter whose connections use one :func:`client_context` (our certificate, our trust).

    requests would otherwise load its own CA bundle (certifi) into the context -- a world-wide CA set ITI-19
    3.19.6.1.3 calls inappropriate -- so verification is left wholly to the context.
    """

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self._context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["ssl_context"] = self._context
        return super().proxy_manager_for(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # Trust and our certificate are the context's; requests must not add certifi or a cert file.
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = None
        conn.ca_cert_dir = None
        conn.cert_file = None
        conn.key_file = None

    def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None
                                             ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        for key in ("ca_certs", "ca_cert_dir", "cert_file", "key_file"):
            pool_kwargs.pop(key, None)
        pool_kwargs["ssl_context"] = self._context
        pool_kwargs["cert_reqs"] = "CERT_REQUIRED"
        return host_params, pool_kwargs


def requests_adapter(settings: TlsSettings, **kwargs: Any) -> TlsAdapter:
    """An adapter to mount on ``https://`` of a ``requests.Session`` for outbound TLS with our identity."""
    return TlsAdapter(client_context(settings), **kwargs)
