"""gunicorn's access log without patient data (issue 13): the logger class ``make run`` gives every web server.

The access log format (config/supervisor.py) already leaves the query string out (``%(U)s``, not ``%(r)s``):
the portal's ``/patient/?id=`` and WADO's ``?studyUID=`` carry patient ids and UIDs there.  Some paths carry UIDs
too -- ``/manifests/<repository>/<document>/series/<series>/thumbnail.png`` -- so :class:`PhiSafeLogger` writes
every dotted-decimal path segment (an OID / DICOM UID, PS3.5 9.1) as its :func:`~xds_core.log_ref.log_ref`, and
empties the atoms that would show the raw request line or query (``r``, ``q``) and the Referer (``f``), should an
operator's ``--access-logformat`` use them.
"""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger

from xds_core.log_ref import log_ref

#: A path segment that is a dotted-decimal identifier of three arcs or more (a UID or OID), with an optional
#: XDS uniqueId extension (``^ext``).
_UID_SEGMENT = re.compile(r"(?<=/)[0-9]+(?:\.[0-9]+){2,}(?:\^[^/]*)?(?=/|$)")


def safe_path(path: str) -> str:
    """``path`` with each UID segment replaced by its log reference."""
    return _UID_SEGMENT.sub(lambda match: log_ref(match.group(0)), path)


class PhiSafeLogger(Logger):
    """gunicorn's logger whose access-log atoms carry no query string, Referer or UID path segment."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        path = safe_path(atoms.get("U") or "")
        atoms.update({"U": path, "q": "", "f": "-", "r": f"{atoms.get('m')} {path} {atoms.get('H')}",
                      "{referer}i": "-"})
        return atoms
