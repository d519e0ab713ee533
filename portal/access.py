"""Who the logged-in user is to this node: their hospital, and whether this node is their hospital's.

Every portal page needs a login; what a user may *do* here depends on their hospital: a clinician imports
only into their own hospital's PACS (the node whose ``XDS_SITE_KEY`` is their hospital's key), and only
that hospital's users operate its imaging source.  The security issue's roles refine this once they land.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from portal.models import Hospital


def user_hospital(user: Any) -> Hospital | None:
    """The hospital ``user`` belongs to (None: no membership, or anonymous)."""
    if not getattr(user, "is_authenticated", False):
        return None
    membership = getattr(user, "membership", None)
    return membership.hospital if membership is not None else None


def is_home_user(user: Any) -> bool:
    """Whether ``user`` belongs to the hospital this node is (``XDS_SITE_KEY``)."""
    hospital = user_hospital(user)
    return hospital is not None and hospital.key == settings.XDS_SITE_KEY


def why_not_home(user: Any) -> str:
    """Why ``user`` may not act for this node's hospital, in words ("" when they may)."""
    hospital = user_hospital(user)
    if hospital is None:
        return "Your user belongs to no hospital; an administrator assigns one."
    if hospital.key != settings.XDS_SITE_KEY:
        return (f"You belong to {hospital.name}; this node is {settings.XDS_SITE_NAME}. "
                f"Only its own users act on its PACS.")
    return ""


def site(request: HttpRequest) -> dict[str, Any]:
    """Template context processor: this node and the user's hospital."""
    return {"site_name": settings.XDS_SITE_NAME, "site_key": settings.XDS_SITE_KEY,
            "user_hospital": user_hospital(getattr(request, "user", None))}
