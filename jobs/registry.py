"""Job kinds and their handlers, and the errors a handler raises to say how it failed.

An actor registers each kind it owns from its ``AppConfig.ready()`` (so every process that runs Django,
the worker included, knows every kind); ``jobs`` never imports an actor.  A kind is a dotted name
``<app>.<task>`` such as ``imaging_source.publish_study``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.models import Job

#: ``<app>.<task>``: lower-case words separated by dots; fits Job.kind (100 characters).
KIND_RE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")
MAX_KIND_LENGTH = 100

#: A handler runs one job; it returns normally on success and raises on failure.  It may run more than
#: once for one job (a worker that died mid-job): it must be idempotent.
Handler = Callable[["Job"], object]

_handlers: dict[str, Handler] = {}
_subscribers: dict[str, list[str]] = {}
_lock = threading.Lock()


class Event(StrEnum):
    """What one actor announces and another may act on, without either importing the other.

    An actor announces an event (:func:`jobs.api.announce`); each job kind subscribed to it
    (:func:`subscribe`, from the subscriber's ``AppConfig.ready()``) gets a job with the event's payload.
    """

    #: A procedure is scheduled at this site: a Modality Worklist item it polls (PS3.4 K.6).
    #: Payload: ``trigger`` (the item's key), ``local_patient_id``, ``local_issuer``,
    #: ``affinity_patient_id`` (CX), ``event_codes`` (``code^^scheme`` of the modality and body part).
    PROCEDURE_SCHEDULED = "procedure.scheduled"
    #: A procedure has begun at this site: an MPPS N-CREATE IN PROGRESS reached the DICOM listener
    #: (PS3.4 F.7.2.1, RAD-6).  Payload as for PROCEDURE_SCHEDULED, ``trigger`` the MPPS SOP Instance UID.
    PROCEDURE_IN_PROGRESS = "procedure.in_progress"


class JobError(Exception):
    """A failure whose message is recorded in ``Job.last_error``: write it free of patient data.

    The job is retried (with backoff) while attempts remain.  Any other exception is retried too, but
    records only its class and where it was raised: its message might quote a name or an identifier.
    """


class PermanentJobError(JobError):
    """A failure no retry can cure (a malformed payload, a refusal that will not change): dead at once."""


class UnknownJobKind(PermanentJobError):
    """No handler is registered for the job's kind (e.g. a job left by a removed feature)."""


def check_kind(kind: str) -> str:
    """Return ``kind`` if it is a well-formed kind name, else raise ValueError."""
    if not isinstance(kind, str) or len(kind) > MAX_KIND_LENGTH or not KIND_RE.fullmatch(kind):
        raise ValueError(f"job kind {kind!r} is not a dotted lower-case name such as 'app.task' "
                         f"(at most {MAX_KIND_LENGTH} characters)")
    return kind


def register(kind: str, handler: Handler) -> None:
    """Make ``handler`` run the jobs of ``kind``.  Registering the same handler again is a no-op;
    a second, different handler for one kind is a programming error (ValueError)."""
    check_kind(kind)
    if not callable(handler):
        raise TypeError(f"handler of job kind {kind!r} is not callable")
    with _lock:
        current = _handlers.get(kind)
        if current is not None and current is not handler:
            raise ValueError(f"job kind {kind!r} already has a handler ({current!r})")
        _handlers[kind] = handler


def handler_for(kind: str) -> Handler:
    """The handler of ``kind``; :class:`UnknownJobKind` if none is registered."""
    with _lock:
        handler = _handlers.get(kind)
    if handler is None:
        raise UnknownJobKind(f"unknown kind {kind!r}: no handler is registered for it")
    return handler


def subscribe(event: Event, kind: str) -> None:
    """Give every announcement of ``event`` a job of ``kind`` (once per kind, however often called)."""
    check_kind(kind)
    with _lock:
        kinds = _subscribers.setdefault(Event(event).value, [])
        if kind not in kinds:
            kinds.append(kind)


def unsubscribe(event: Event, kind: str) -> None:
    with _lock:
        kinds = _subscribers.get(Event(event).value, [])
        if kind in kinds:
            kinds.remove(kind)


def subscribers(event: Event) -> list[str]:
    with _lock:
        return list(_subscribers.get(Event(event).value, []))


def registered_kinds() -> list[str]:
    with _lock:
        return sorted(_handlers)
