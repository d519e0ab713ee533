"""Patient pool and Patient Identity Feed of the conformance runner (conformance README §3).

Every run uses fresh CX ids under the affinity domain's assigning authority, so
exact Stored Query counts hold on a registry that already holds earlier runs.
A patient marked ``fed`` is fed once, before its first use, through either an
HL7 v2 ADT^A04 over MLLP (ITI-8) or a user command (``--feed-cmd 'CMD {pid}'``).
"""

from __future__ import annotations

import secrets
import shlex
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from xds_core import mllp

DEFAULT_AUTHORITY = "1.3.6.1.4.1.21367.2005.13.20.1000"


class FeedError(RuntimeError):
    """The feed did not acknowledge the patient (reason in the message)."""


class Feed(Protocol):
    def feed(self, patient_id: str) -> None: ...


@dataclass
class Hl7Feed:
    """ITI-8 Patient Identity Feed: HL7 v2.5 ADT^A04 over MLLP, waiting for an AA/CA acknowledgement."""

    host: str
    port: int
    timeout: float = 30.0
    sending_application: str = "XDS_CONFORMANCE"
    receiving_application: str = "XDS_REGISTRY"
    #: MLLP over TLS (ITI-19): a client context presenting our certificate; None: plain MLLP.
    ssl_context: ssl.SSLContext | None = None

    def message(self, patient_id: str, control_id: str) -> bytes:
        now = datetime.now().strftime("%Y%m%d%H%M%S")
        # PID-3 carries the CX exactly as XDS spells it: id^^^&OID&ISO is HL7 v2
        # encoding (components ^, sub-components &), so it goes in verbatim.
        segments = [
            f"MSH|^~\\&|{self.sending_application}|CONFORMANCE|{self.receiving_application}|AFFINITY|{now}||"
            f"ADT^A04^ADT_A01|{control_id}|P|2.5",
            f"EVN|A04|{now}",
            f"PID|1||{patient_id}||CONFORMANCE^PATIENT^^^^^L||19700101|U",
            "PV1|1|O",
        ]
        return ("\r".join(segments) + "\r").encode("utf-8")

    def feed(self, patient_id: str) -> None:
        control_id = f"XC{secrets.token_hex(8)}"
        try:  # MLLP framing, size limit and timeout: xds_core.mllp
            answer = mllp.exchange(self.host, self.port, self.message(patient_id, control_id), timeout=self.timeout,
                                   ssl_context=self.ssl_context)
        except (OSError, mllp.MllpError) as exc:
            raise FeedError(f"HL7 feed {self.host}:{self.port}: {exc}") from exc
        check_ack(answer, control_id)


def check_ack(message: bytes, control_id: str | None = None) -> None:
    """Raise :class:`FeedError` unless ``message`` is an ACK with MSA-1 AA (or CA)."""
    text = message.decode("utf-8", errors="replace")
    segments = [s for s in text.replace("\n", "\r").split("\r") if s]
    msa = next((s for s in segments if s.startswith("MSA")), None)
    if msa is None:
        raise FeedError(f"no MSA segment in the acknowledgement: {text[:120]!r}")
    fields = msa.split(msa[3] if len(msa) > 3 else "|")
    code = fields[1] if len(fields) > 1 else ""
    if code not in ("AA", "CA"):
        err = next((s for s in segments if s.startswith("ERR")), "")
        detail = fields[3] if len(fields) > 3 else ""
        raise FeedError(f"feed refused: MSA-1={code or '?'} {detail} {err}".strip())
    if control_id and len(fields) > 2 and fields[2] and fields[2] != control_id:
        raise FeedError(f"ACK answers message {fields[2]}, not {control_id}")


@dataclass
class CommandFeed:
    """``--feed-cmd``: a shell command with ``{pid}`` replaced (shell-quoted); exit status 0 = fed."""

    template: str
    timeout: float = 120.0

    def feed(self, patient_id: str) -> None:
        command = self.template.replace("{pid}", shlex.quote(patient_id))
        try:
            done = subprocess.run(command, shell=True, capture_output=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise FeedError(f"feed command timed out after {self.timeout:.0f}s") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).decode("utf-8", errors="replace").strip()[-300:]
            raise FeedError(f"feed command exited {done.returncode}: {tail}")


@dataclass
class PatientPool:
    """The run's patients: symbolic names (P_REG, ...) -> fresh CX ids; tracks what was fed."""

    definitions: dict[str, dict[str, Any]]
    feed_client: Feed | None
    authority: str = DEFAULT_AUTHORITY
    ids: dict[str, str] = field(default_factory=dict)
    fed: dict[str, str | None] = field(default_factory=dict)  # CX -> None (ok) or failure reason
    run_token: str = field(default_factory=lambda: datetime.now().strftime("%m%d%H%M%S") + secrets.token_hex(2))
    _counter: int = 0

    def new_id(self) -> str:
        self._counter += 1
        return f"P{self.run_token}.{self._counter}^^^&{self.authority}&ISO"

    def is_symbolic(self, name: str) -> bool:
        return name in self.definitions and "^" not in name

    def resolve(self, name: str) -> str:
        """CX of a symbolic patient (allocated on first use) or the literal itself."""
        if not self.is_symbolic(name):
            return name
        if name not in self.ids:
            self.ids[name] = self.new_id()
        return self.ids[name]

    def must_feed(self, name_or_cx: str) -> bool:
        """Symbolic patients follow their ``fed`` flag; literal ids are fed (README §3 literal patients)."""
        for name, cx in self.ids.items():
            if cx == name_or_cx:
                return bool(self.definitions.get(name, {}).get("fed", False))
        if self.is_symbolic(name_or_cx):
            return bool(self.definitions[name_or_cx].get("fed", False))
        return True

    def ensure_fed(self, name_or_cx: str) -> str | None:
        """Feed once if needed; returns None when the patient is known, else the failure reason."""
        if not self.must_feed(name_or_cx):
            return None
        cx = self.resolve(name_or_cx)
        if cx in self.fed:
            return self.fed[cx]
        if self.feed_client is None:
            # Nothing to feed with: the registry must already know the id (or accept any).
            self.fed[cx] = None
            return None
        try:
            self.feed_client.feed(cx)
            self.fed[cx] = None
        except FeedError as exc:
            self.fed[cx] = str(exc)
        except Exception as exc:  # a feed must never crash the run
            self.fed[cx] = f"feed failed: {exc!r}"
        return self.fed[cx]


def parse_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def wait_seconds(milliseconds: int) -> None:
    if milliseconds > 0:
        time.sleep(milliseconds / 1000)
