"""The one place that reads environment variables.

Every setting of the suite comes through here.  Bad values fail loudly at
start-up (``ImproperlyConfigured``) instead of surfacing later as odd
behaviour; ``config/checks.py`` re-validates the cross-field rules as Django
system checks so ``manage.py check`` reports them too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured

from xds_core.env_file import EnvFileError, parse_env_text
from xds_core.identifiers import is_iso_oid

T = TypeVar("T")

#: Every setting the suite reads: name -> (default, description).  The README
#: table is checked against this registry by a test, so it cannot drift.
REGISTRY: dict[str, tuple[str, str]] = {}


def apply_env_file(path: str) -> None:
    """Apply a file of ``KEY=VALUE`` lines (``#`` comments, blank lines) over ``os.environ``.

    ``XDS_ENV_FILE`` names one: a site's whole configuration in one place (``make run`` writes one per
    demo site, so a command run with it acts as that site).  The file wins over the environment, so a
    shell's own ``DATABASE_URL`` cannot point a site at another site's database.  A line that is not
    ``KEY=VALUE`` with a valid variable name fails loudly.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ImproperlyConfigured(f"XDS_ENV_FILE={path!r}: {exc.strerror}") from None
    try:
        values = parse_env_text(text)
    except EnvFileError as exc:
        raise ImproperlyConfigured(f"XDS_ENV_FILE={path!r} {exc}") from None
    os.environ.update(values)


def _raw(name: str, default: str, doc: str) -> str:
    REGISTRY[name] = (default, doc)
    return os.environ.get(name, default)


def _fail(name: str, value: str, problem: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"environment variable {name}={value!r}: {problem}")


def string(name: str, default: str, doc: str) -> str:
    return _raw(name, default, doc)


def boolean(name: str, default: bool, doc: str) -> bool:
    value = _raw(name, "true" if default else "false", doc).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise _fail(name, value, "expected a boolean (true/false, 1/0, yes/no, on/off)")


def integer(name: str, default: int, doc: str, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
    value = _raw(name, str(default), doc).strip()
    try:
        number = int(value)
    except ValueError:
        raise _fail(name, value, "expected an integer") from None
    if minimum is not None and number < minimum:
        raise _fail(name, value, f"must be >= {minimum}")
    if maximum is not None and number > maximum:
        raise _fail(name, value, f"must be <= {maximum}")
    return number


def size(name: str, default: str, doc: str) -> int:
    """A byte size such as ``100MB``, ``2GiB`` or ``1048576``."""
    value = _raw(name, default, doc).strip()
    match = re.fullmatch(r"([0-9]+)\s*([kKmMgGtT]?)(i?[bB])?", value)
    if not match:
        raise _fail(name, value, "expected a size such as 1048576, 100MB or 2GiB")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[match.group(2).lower()]
    return int(match.group(1)) * factor


def oid(name: str, default: str, doc: str, *, required: bool = True) -> str:
    value = _raw(name, default, doc).strip()
    if not value and not required:
        return ""
    if not is_iso_oid(value):  # ISO OID (X.660): the affinity domain's ids are registered OIDs
        raise _fail(name, value, "expected an OID such as 1.3.6.1.4.1.21367.13.80.110 (max 64 chars)")
    return value


def url(name: str, default: str, doc: str, *, required: bool = False) -> str:
    value = _raw(name, default, doc).strip()
    if not value and not required:
        return ""
    if not re.match(r"^https?://[^\s/]+", value):
        raise _fail(name, value, "expected an http:// or https:// URL")
    return value


def csv(name: str, default: str, doc: str) -> list[str]:
    value = _raw(name, default, doc)
    return [item.strip() for item in value.split(",") if item.strip()]


def choice(name: str, default: str, doc: str, choices: tuple[str, ...]) -> str:
    value = _raw(name, default, doc).strip()
    if value not in choices:
        raise _fail(name, value, f"expected one of {', '.join(choices)}")
    return value


def custom(name: str, default: str, doc: str, parse: Callable[[str], T]) -> T:
    value = _raw(name, default, doc)
    try:
        return parse(value)
    except (ValueError, TypeError) as exc:
        raise _fail(name, value, str(exc)) from None


def dicom_peer(value: str) -> dict[str, Any] | None:
    """``AET@host:port`` -> {"ae_title", "host", "port"}; empty -> None."""
    value = value.strip()
    if not value:
        return None
    match = re.fullmatch(r"([^@\s\\]{1,16})@([^:\s]+):([0-9]{1,5})", value)
    if not match:
        raise ValueError("expected AET@host:port, e.g. ORTHANC@127.0.0.1:4242")
    port = int(match.group(3))
    if not 0 < port < 65536:
        raise ValueError("port out of range")
    return {"ae_title": match.group(1), "host": match.group(2), "port": port}


def ae_title(value: str) -> str:
    value = value.strip()
    if not value or len(value) > 16 or "\\" in value:
        raise ValueError("an AE title is 1-16 characters without backslash")
    return value


def dicom_lo(value: str) -> str:
    """A non-empty DICOM LO value (PS3.5 6.2: at most 64 characters, no backslash)."""
    value = value.strip()
    if not value or len(value) > 64 or "\\" in value:
        raise ValueError("a DICOM LO value is 1-64 characters without backslash")
    return value


def xds_code(value: str) -> tuple[str, str, str]:
    """``code^^scheme^display`` (an XDS coded value, display optional) -> (code, scheme, display)."""
    parts = value.strip().split("^")
    if len(parts) < 3 or not parts[0] or parts[1] or not parts[2] or len(parts) > 4:
        raise ValueError("expected code^^scheme^display, e.g. IMAGES^^1.3.6.1.4.1.19376.1.2.6.1^Images")
    return parts[0], parts[2], parts[3] if len(parts) == 4 else ""


def site_key(value: str) -> str:
    """A node's site key: lower-case letters, digits and '-', 1-63 characters, starting with a letter or digit."""
    value = value.strip()
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", value):
        raise ValueError("a site key is 1-63 lower-case letters, digits and '-'")
    return value


def named_urls(value: str) -> list[tuple[str, str]]:
    """``Name=http://host:port, ...`` -> [(name, url)]; each URL http(s) with a host, names unique."""
    from urllib.parse import urlsplit

    out: list[tuple[str, str]] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, address = item.partition("=")
        name, address = name.strip(), address.strip().rstrip("/")
        parts = urlsplit(address)
        if not sep or not name or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{item!r} is not Name=http(s)://host[:port]")
        if any(name == seen for seen, _ in out):
            raise ValueError(f"{name!r} is named twice")
        out.append((name, address))
    return out
