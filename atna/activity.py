"""The node's own activity as audit events: services starting and stopping, users logging in and out.

* **Application Activity** (DICOM PS3.15 A.5.3.1; ITI TF-2a Table 3.20.4.1.1.1-1 "Actor-start-stop"):
  each long-running service -- the web worker process, the ITI-8 HL7 listener, the DICOM listener, the
  job worker -- calls :func:`started` once it is ready to serve.  That records Application Start and
  arranges Application Stop for the normal end of the process (``atexit``).  A process whose SIGTERM
  still has the default disposition (it would die without running ``atexit``: the HL7 listener) gets a
  handler that turns SIGTERM into the interpreter's ordinary exit, so its stop is recorded too; a
  process that handles SIGTERM itself (gunicorn, the job worker, the DICOM listener) keeps its handler.
* **User Authentication** (PS3.15 A.5.3.12): Django's ``user_logged_in`` / ``user_logged_out`` /
  ``user_login_failed`` signals become Login / Logout events (a failure: outcome 4, "minor failure":
  the user may try again) -- :func:`connect_signals`, called from ``AtnaConfig.ready``.  The claimed user
  name is recorded; the credentials never are (Django passes them cleansed, and we read only the name).

Settings are read here (the edge) and passed to the builders of :mod:`xds_core.audit`.
"""

from __future__ import annotations

import atexit
import getpass
import signal
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import signals as auth_signals
from django.http import HttpRequest

from xds_core import audit

#: The services of a node, as UserID of their Application participant (``xdsi-<service>:<site key>``).
SERVICES = ("web", "hl7-listener", "dicom-listener", "jobs-worker")

_stops: dict[str, Callable[[], None]] = {}
_lock = threading.Lock()


def application_id(service: str) -> str:
    """The Application participant's UserID of ``service`` on this node (PS3.15 A.5.3.1)."""
    return f"xdsi-{service}:{settings.XDS_SITE_KEY}"


def _launcher() -> audit.Participant | None:
    """The operating-system user running this process (110151 Application Launcher), when it has a name."""
    try:
        return audit.Participant(getpass.getuser())
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a container's numeric uid)
        return None


def started(service: str) -> Callable[[], None]:
    """Record Application Start of ``service``; Application Stop follows at the process's normal end.

    Returns the function that records the stop (once), for a caller that ends the service before the
    process ends; calling :func:`started` again for the same service in the same process records nothing
    new (a management command run twice in one test process).
    """
    app = application_id(service)
    with _lock:
        if app in _stops:
            return _stops[app]
        done = threading.Event()

        def stop() -> None:
            if not done.is_set():
                done.set()
                audit.record(lambda: audit.application_activity(False, app, launcher=_launcher()))

        _stops[app] = stop
    audit.record(lambda: audit.application_activity(True, app, launcher=_launcher()))
    atexit.register(stop)
    _exit_on_sigterm()
    return stop


def _exit_on_sigterm() -> None:
    # SIGTERM's default action ends the process without atexit; SystemExit runs it (and the service's
    # own ``finally`` blocks).  Only the main thread may set handlers; a handler already set is kept.
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # the shell's convention for "ended by signal N"


# --- User Authentication (PS3.15 A.5.3.12) ---------------------------------------------------------------


def _portal_node() -> audit.Participant:
    return audit.this_node(f"portal:{settings.XDS_SITE_KEY}")


def _address(request: HttpRequest | None) -> str:
    return request.META.get("REMOTE_ADDR", "") if request is not None else ""


def _on_login(sender: Any, request: HttpRequest | None = None, user: Any = None, **_: Any) -> None:
    if user is None:
        return
    person = audit.Participant(user.get_username(), _address(request), user_name=user.get_full_name(),
                               is_requestor=True)
    audit.record(lambda: audit.user_authentication(True, person, node=_portal_node()))


def _on_logout(sender: Any, request: HttpRequest | None = None, user: Any = None, **_: Any) -> None:
    if user is None:  # logging out of an anonymous session: nobody was authenticated
        return
    person = audit.Participant(user.get_username(), _address(request), user_name=user.get_full_name(),
                               is_requestor=True)
    audit.record(lambda: audit.user_authentication(False, person, node=_portal_node()))


def _on_login_failed(sender: Any, credentials: dict[str, Any] | None = None, request: HttpRequest | None = None,
                     **_: Any) -> None:
    # Only the claimed user name: never a credential (Django cleanses them, we still read nothing else).
    claimed = str((credentials or {}).get("username") or "(no user name)")
    person = audit.Participant(claimed, _address(request), is_requestor=True)
    audit.record(lambda: audit.user_authentication(
        True, person, node=_portal_node(), outcome=audit.EventOutcome.MINOR_FAILURE,
        description="authentication failed"))


def connect_signals() -> None:
    """Record every login, logout and failed login (``AtnaConfig.ready``)."""
    auth_signals.user_logged_in.connect(_on_login, dispatch_uid="atna.activity.login")
    auth_signals.user_logged_out.connect(_on_logout, dispatch_uid="atna.activity.logout")
    auth_signals.user_login_failed.connect(_on_login_failed, dispatch_uid="atna.activity.login_failed")
