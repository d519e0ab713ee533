"""Patient data shown in the portal goes through the audit seam, with the logged-in user as requestor.

A page that shows a patient's documents, a manifest, a thumbnail, or hands out a zip records one event
(PS3.15 A.5.3.14 Patient Record, or A.5.3.4 Export for a download), whose requestor is the human user
(UserID = user name, UserIsRequestor, the browser's address) and whose other participant is this node.
The IHE transactions the page ran on the way (ITI-18, ITI-43, RAD-69) are audited by the clients that
sent them, as for any other consumer.  An action refused to a logged-in user (a user of another hospital
importing or acting on this node's imaging source) is a Security Alert, Use of Restricted Function
(PS3.15 A.5.3.11).  Logins and logouts: :mod:`atna.activity`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime

from django.conf import settings
from django.http import HttpRequest

from xds_core import audit


def _user(request: HttpRequest) -> audit.Participant:
    user = request.user
    full_name = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return audit.Participant(user.get_username(), request.META.get("REMOTE_ADDR", ""), user_name=full_name,
                             is_requestor=True, role=audit.ParticipantRole.DESTINATION)


def _node() -> audit.Participant:
    return audit.this_node(f"portal:{settings.XDS_SITE_KEY}")


def _event(request: HttpRequest, event_id: audit.EventId, action: audit.EventAction,
           objects: Iterable[audit.ParticipantObject], outcome: audit.EventOutcome,
           description: str) -> audit.AuditEvent:
    node = replace(_node(), role=audit.ParticipantRole.SOURCE)
    return audit.AuditEvent(event_id=event_id, action=action, outcome=outcome, transaction=None,
                            time=datetime.now(UTC), participants=(_user(request), node), objects=tuple(objects),
                            outcome_description=description)


def patient_record_read(request: HttpRequest, objects: Iterable[audit.ParticipantObject], *,
                        outcome: audit.EventOutcome = audit.EventOutcome.SUCCESS, description: str = "") -> None:
    """The user saw a patient's data (documents, a manifest, a thumbnail): Patient Record, Read."""
    items = list(objects)
    audit.record(lambda: _event(request, audit.EventId.PATIENT_RECORD, audit.EventAction.READ, items, outcome,
                                description))


def exported(request: HttpRequest, objects: Iterable[audit.ParticipantObject], *,
             outcome: audit.EventOutcome = audit.EventOutcome.SUCCESS, description: str = "") -> None:
    """The user took a patient's images out of the system (a zip download): Export (A.5.3.4), Read."""
    items = list(objects)
    audit.record(lambda: _event(request, audit.EventId.EXPORT, audit.EventAction.READ, items, outcome,
                                description))


def refused(request: HttpRequest, reason: str) -> None:
    """The user asked for an action its role does not allow here, and was refused (403): Security Alert,
    Use of Restricted Function (PS3.15 A.5.3.11; outcome 4, mitigated).  The subject is the page's path
    (no query string: it may name a patient); ``reason`` says why, in words without patient data."""
    audit.record(lambda: audit.security_alert(
        audit.SecurityAlertType.USE_OF_RESTRICTED_FUNCTION, reporter=_node(), subject=request.path,
        description=reason, outcome=audit.EventOutcome.MINOR_FAILURE,
        performers=[replace(_user(request), role=None)]))
