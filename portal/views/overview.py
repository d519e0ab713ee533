"""Portal pages: the node's overview (``/``, login) and its health document (``/healthz``, public)."""

from __future__ import annotations

import tomllib
from functools import cache

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import URLPattern, path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from consumer.models import Endpoint
from portal import journal, status


@cache
def version() -> str:
    """The suite's version (pyproject.toml), read once."""
    try:
        with open(settings.BASE_DIR / "pyproject.toml", "rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return ""


COUNT_LABELS = {"patients": "Patients", "documents": "Documents", "manifests": "Imaging manifests (KOS)",
                "pending_reconciliations": "Pending reconciliations", "queued_jobs": "Queued jobs",
                "running_jobs": "Running jobs"}


def _labelled(counts: dict[str, int]) -> list[tuple[str, int]]:
    return [(COUNT_LABELS.get(key, key.replace("_", " ")), value) for key, value in counts.items()]


def _journal() -> journal.Journal:
    return journal.installed() or journal.Journal(settings.VAR_DIR / "journal")


def _endpoints(request: HttpRequest, config: status.NodeConfig) -> list[dict[str, str]]:
    """The SOAP endpoints of the actors this node runs, as absolute URLs."""
    rows = []
    if config.registry_here:
        rows.append(("Document Registry", "xds-registry", "ITI-18 Registry Stored Query, ITI-42 Register Document "
                                                          "Set-b"))
    if config.repository_here:
        rows.append(("Document Repository", "xds-repository", "ITI-41 Provide and Register Document Set-b, "
                                                              "ITI-43 Retrieve Document Set"))
    if config.imaging_source:
        rows.append(("Imaging Document Source", "xds-imaging-source", "RAD-69 Retrieve Imaging Document Set"))
    out = []
    for actor, name, transactions in rows:
        url = request.build_absolute_uri(reverse(name))
        out.append({"actor": actor, "url": url, "wsdl": f"{url}?wsdl", "transactions": transactions})
    if config.imaging_source:
        url = request.build_absolute_uri(reverse("xds-imaging-source-wado"))
        out.append({"actor": "Imaging Document Source", "url": url, "wsdl": "",
                    "transactions": "RAD-55 WADO Retrieve (WADO-URI)"})
    return out


@login_required
@never_cache
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """What this node is: its actors, endpoints, the state of its parts and of the other nodes, counts and
    the last transactions (all checks side by side, each bounded: a part that is down is a word)."""
    config = status.NodeConfig.from_settings(settings)
    node = status.node_status(config, with_peers=True)
    directory = list(Endpoint.objects.order_by("kind", "unique_id", "pk")[:200])
    return render(request, "portal/overview.html", {
        "nav": "home", "node": node, "config": config, "version": version(),
        "endpoints": _endpoints(request, config), "directory": directory,
        "counts": _labelled(node.counts),
        "peers": [(peer, _labelled(peer.counts)) for peer in node.peers],
        "transactions": _journal().last(20), "journal_on": journal.installed() is not None,
        "components": [(label, node.components[key]) for key, label in (
            ("database", "Database"), ("registry", "Document Registry"), ("pacs", "PACS"),
            ("dicom_listener", "DICOM listener"), ("document_store", "Document store"))],
    })


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """For load balancers (no login): 200 when every configured component answers, else 503.  No patient data,
    no transactions, and no peers (a node asking its peers' /healthz would make them ask theirs)."""
    node = status.node_status(status.NodeConfig.from_settings(settings))
    return JsonResponse(node.healthz(version()), status=200 if node.ok else 503)


urlpatterns: list[URLPattern] = [
    path("", home, name="home"),
    path("healthz", healthz, name="healthz"),
]
