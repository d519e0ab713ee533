"""The endpoint directory: model validation, resolve(), and `manage.py xds_endpoints` on hostile files."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError

from consumer.directory import UnknownEndpoint, resolve
from consumer.models import Endpoint, EndpointKind

pytestmark = pytest.mark.django_db

GOOD = """
- kind: repository
  unique_id: 1.3.6.1.4.1.21367.13.70.201
  url: https://repo.example.org/xds/repository
- kind: imaging_source
  unique_id: 1.3.6.1.4.1.21367.13.80.110
  url: http://ids.example.org:8080/xds/imaging-source
  description: radiology PACS
"""


def write(tmp_path: Path, text: str, name: str = "endpoints.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_then_resolve_and_list(tmp_path: Path) -> None:
    out = StringIO()
    call_command("xds_endpoints", "load", str(write(tmp_path, GOOD)), stdout=out)
    assert "2 endpoint(s) created, 0 updated" in out.getvalue()
    assert resolve(EndpointKind.REPOSITORY, "1.3.6.1.4.1.21367.13.70.201") == "https://repo.example.org/xds/repository"
    with pytest.raises(UnknownEndpoint, match="1.3.6.1.4.1.21367.13.70.201"):
        resolve(EndpointKind.IMAGING_SOURCE, "1.3.6.1.4.1.21367.13.70.201")
    # Loading again updates, never duplicates.
    changed = GOOD.replace("https://repo.example.org", "https://repo2.example.org")
    out = StringIO()
    call_command("xds_endpoints", "load", str(write(tmp_path, changed)), stdout=out)
    assert "0 endpoint(s) created, 2 updated" in out.getvalue()
    assert Endpoint.objects.count() == 2
    listing = StringIO()
    call_command("xds_endpoints", "list", stdout=listing)
    assert "https://repo2.example.org/xds/repository" in listing.getvalue()
    assert "radiology PACS" in listing.getvalue()


def test_json_file_is_accepted(tmp_path: Path) -> None:
    entries = [{"kind": "repository", "unique_id": "1.2.3.4", "url": "http://r.example/x"}]
    call_command("xds_endpoints", "load", str(write(tmp_path, json.dumps(entries), "e.json")), stdout=StringIO())
    assert resolve(EndpointKind.REPOSITORY, "1.2.3.4") == "http://r.example/x"


@pytest.mark.parametrize(("text", "message"), [
    (GOOD + "- {kind: repository, unique_id: '1.2.03', url: 'http://x.example'}\n", "entry 3 (1.2.03): unique_id"),
    (GOOD + "- {kind: repository, unique_id: '1.2.3', url: 'file:///etc/passwd'}\n", "not an http:// or https:// URL"),
    (GOOD + "- {kind: repository, unique_id: '1.2.3', url: 'http://a b'}\n", "not an http:// or https:// URL"),
    (GOOD + "- {kind: pacs, unique_id: '1.2.3', url: 'http://x.example'}\n", "entry 3 (1.2.3): kind"),
    (GOOD + "- {kind: repository, unique_id: '1.2.3'}\n", "entry 3: missing url"),
    (GOOD + "- {kind: repository, unique_id: 1.5, url: 'http://x.example'}\n", "must be strings"),
    (GOOD + "- {kind: repository, unique_id: '1.2.3', url: 'http://x.example', secret: 1}\n", "unknown key(s) secret"),
    (GOOD + GOOD, "entry 3: repository 1.3.6.1.4.1.21367.13.70.201 is listed twice"),
    ("kind: repository\n", "expected a list"),
    ("- [unclosed\n", "not valid YAML"),
    ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
])
def test_hostile_file_loads_nothing(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CommandError) as caught:
        call_command("xds_endpoints", "load", str(write(tmp_path, text)), stdout=StringIO())
    assert message in str(caught.value)
    assert "nothing loaded" in str(caught.value) or "YAML" in str(caught.value) or "list" in str(caught.value)
    assert Endpoint.objects.count() == 0  # the good entries before the bad one were not written


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="cannot read"):
        call_command("xds_endpoints", "load", str(tmp_path / "nope.yaml"))


def test_model_validation_refuses_bad_oid_and_url() -> None:
    endpoint = Endpoint(kind=EndpointKind.REPOSITORY, unique_id="3.1", url="ftp://x")
    with pytest.raises(ValidationError) as caught:
        endpoint.full_clean()
    assert set(caught.value.message_dict) == {"unique_id", "url"}
