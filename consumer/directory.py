"""Reading and loading the endpoint directory (:class:`consumer.models.Endpoint`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from consumer.models import Endpoint, EndpointKind

#: At most this many bytes are read from a directory file (a hostile file cannot exhaust memory).
MAX_DIRECTORY_FILE = 1 << 20


class UnknownEndpoint(LookupError):
    """The directory has no endpoint of that kind for that unique id."""

    def __init__(self, kind: EndpointKind, unique_id: str) -> None:
        self.kind = kind
        self.unique_id = unique_id
        super().__init__(f"no {EndpointKind(kind).label} endpoint for unique id {unique_id!r} in the endpoint "
                         f"directory (add it with `manage.py xds_endpoints load FILE`)")


class DirectoryFileError(ValueError):
    """A directory file that cannot be loaded; the message names the entry and the problem."""


def resolve(kind: EndpointKind, unique_id: str) -> str:
    """The URL of the ``kind`` endpoint answering for ``unique_id``; :class:`UnknownEndpoint` otherwise."""
    url = Endpoint.objects.filter(kind=kind, unique_id=unique_id).values_list("url", flat=True).first()
    if url is None:
        raise UnknownEndpoint(kind, unique_id)
    return url


@dataclass(frozen=True, slots=True)
class EndpointEntry:
    kind: EndpointKind
    unique_id: str
    url: str
    description: str = ""


def parse_directory_file(path: Path) -> list[EndpointEntry]:
    """A YAML or JSON list of ``{kind, unique_id, url[, description]}``, every entry validated; all
    problems are reported together (:class:`DirectoryFileError`)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_DIRECTORY_FILE + 1)
    except OSError as exc:
        raise DirectoryFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_DIRECTORY_FILE:
        raise DirectoryFileError(f"{path} is larger than {MAX_DIRECTORY_FILE} bytes")
    try:
        text = raw.decode("utf-8")
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise DirectoryFileError(f"{path} is not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: "
                                 f"{exc}") from exc
    if not isinstance(data, list):
        raise DirectoryFileError(f"{path}: expected a list of {{kind, unique_id, url}} entries")
    return validate_entries(data)


def validate_entries(data: Iterable[object]) -> list[EndpointEntry]:
    entries: list[EndpointEntry] = []
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    allowed = {"kind", "unique_id", "url", "description"}
    for index, item in enumerate(data, start=1):
        where = f"entry {index}"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping with kind, unique_id and url")
            continue
        unknown = sorted(str(k) for k in item if k not in allowed)
        if unknown:
            problems.append(f"{where}: unknown key(s) {', '.join(unknown)}")
        values = {key: item.get(key) for key in allowed}
        missing = [key for key in ("kind", "unique_id", "url") if values[key] in (None, "")]
        if missing:
            problems.append(f"{where}: missing {', '.join(missing)}")
            continue
        if not all(isinstance(values[key], str) for key in allowed if values[key] is not None):
            problems.append(f"{where}: kind, unique_id, url and description must be strings")
            continue
        kind, unique_id, url = str(values["kind"]), str(values["unique_id"]), str(values["url"])
        endpoint = Endpoint(kind=kind, unique_id=unique_id, url=url, description=str(values["description"] or ""))
        try:
            endpoint.full_clean(validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            for field_name, messages in exc.message_dict.items():
                problems += [f"{where} ({unique_id}): {field_name}: {m}" for m in messages]
            continue
        if (kind, unique_id) in seen:
            problems.append(f"{where}: {kind} {unique_id} is listed twice")
            continue
        seen.add((kind, unique_id))
        entries.append(EndpointEntry(EndpointKind(kind), unique_id, url, endpoint.description))
    if problems:
        raise DirectoryFileError("nothing loaded:\n  " + "\n  ".join(problems))
    return entries


@dataclass(frozen=True, slots=True)
class LoadResult:
    created: int
    updated: int


def load(entries: list[EndpointEntry]) -> LoadResult:
    """Create or update every entry, in one transaction (all or nothing)."""
    created = updated = 0
    with transaction.atomic():
        for entry in entries:
            _, was_created = Endpoint.objects.update_or_create(
                kind=entry.kind, unique_id=entry.unique_id,
                defaults={"url": entry.url, "description": entry.description})
            created += was_created
            updated += not was_created
    return LoadResult(created, updated)
