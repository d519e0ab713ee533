"""``XDS_TLS=demo make run``: the demo PKI first, each site's env file a secure node, identity tables filled from a
plan, readiness over TLS, https:// everywhere in the banner; plain HTTP stays the default, with a warning."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from atna import identities
from atna.models import NodeIdentity
from atna.pki_demo import DEMO_ROLES, DemoPki, ensure_demo_pki
from config import supervisor
from demo.sites import demo_identities, demo_sites, endpoint_directory, write_env_files
from demo.studies import B_NIST, NIST_PATIENT, NIST_STUDY_UID, affinity_cx
from xds_core.identity import Role


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DemoPki:
    return ensure_demo_pki(tmp_path_factory.mktemp("pki") / "pki")[0]


def _parse_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def test_each_site_env_file_is_a_secure_node_with_its_own_certificate_and_https_urls(settings, tmp_path: Path,
                                                                                     pki: DemoPki) -> None:  # type: ignore[no-untyped-def]
    settings.VAR_DIR = tmp_path
    sites = demo_sites(settings, "", pki)
    files = write_env_files(sites, tmp_path / "demo")
    certs = set()
    for site in sites:
        env = _parse_env(files[site.key])
        assert env["XDS_TLS"] == "on"
        assert (env["XDS_TLS_CERT"], env["XDS_TLS_KEY"]) == (str(pki.node(site.key).cert), str(pki.node(site.key).key))
        assert env["XDS_TLS_CA"] == str(pki.ca.cert)
        certs.add(env["XDS_TLS_CERT"])
        assert site.base_url.startswith("https://127.0.0.1:")
        assert all(url.startswith("https://") for _, url in
                   (p.split("=", 1) for p in env["XDS_PORTAL_PEERS"].split(",")))
    assert len(certs) == 3
    for hospital in sites[1:]:
        env = _parse_env(files[hospital.key])
        assert env["XDS_REPOSITORY_URL"].startswith("https://") and env["DICOMWEB_URL"].startswith("https://")
        pacs_env = hospital.pacs.script_env(hospital)  # the Orthanc gets the site's certificate
        assert pacs_env["XDS_TLS"] == "on" and pacs_env["XDS_TLS_CERT"] == str(pki.node(hospital.key).cert)
    assert all(e["url"].startswith("https://") for e in endpoint_directory(sites))


def test_without_a_pki_the_sites_stay_plain_http(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.VAR_DIR = tmp_path
    for site in demo_sites(settings):
        assert "XDS_TLS" not in site.env and site.base_url.startswith("http://")


def test_the_supervisor_makes_the_pki_only_under_xds_tls_demo_and_warns_in_plain_mode(settings, tmp_path: Path,
                                                                                     capsys) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_PKI_DIR = tmp_path / "pki"
    settings.XDS_TLS = "off"
    assert supervisor.demo_pki(settings) is None
    assert "plain TCP, for local development only" in capsys.readouterr().out
    assert not settings.XDS_PKI_DIR.exists()
    settings.XDS_TLS = "demo"
    made = supervisor.demo_pki(settings)
    assert made is not None and made.node("hospital-b").exists()
    assert "issued CA" in capsys.readouterr().out
    supervisor.demo_pki(settings)
    assert "kept as it was" in capsys.readouterr().out
    settings.XDS_TLS = "on"
    with pytest.raises(SystemExit, match="XDS_TLS=demo"):
        supervisor.demo_pki(settings)


def test_each_site_admits_exactly_the_nodes_that_call_it_and_the_role_certificates(settings, tmp_path: Path,
                                                                                   pki: DemoPki) -> None:  # type: ignore[no-untyped-def]
    settings.VAR_DIR = tmp_path
    sites = demo_sites(settings, "", pki)
    plan = demo_identities(sites, pki)
    roles = {key: {row.name: set(row.roles) for row in rows} for key, rows in plan.items()}
    role_rows = {f"demo-{r.value}": {r} for r in DEMO_ROLES}
    assert roles["domain"] == {"domain": {Role.SOURCE, Role.CONSUMER, Role.OPERATOR},
                               "hospital-a": {Role.SOURCE, Role.CONSUMER}, "hospital-b": {Role.SOURCE, Role.CONSUMER},
                               **role_rows}
    assert roles["hospital-a"] == {"hospital-a": {Role.SOURCE, Role.CONSUMER, Role.OPERATOR},
                                   "hospital-b": {Role.CONSUMER}, "domain": {Role.CONSUMER}, **role_rows}
    # A hospital submits to the domain under its own imaging source id only.
    (a_at_domain,) = [row for row in plan["domain"] if row.name == "hospital-a"]
    assert a_at_domain.source_ids == (sites[1].imaging_source_id,)


@pytest.mark.django_db
def test_xds_demo_identities_fills_the_table_from_the_plan_and_follows_a_reissued_certificate(
        settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.VAR_DIR = tmp_path
    pki = ensure_demo_pki(tmp_path / "pki")[0]
    sites = demo_sites(settings, "", pki)
    plan_file = tmp_path / "identities.json"
    plan = demo_identities(sites, pki)
    plan_file.write_text(json.dumps({key: [row.as_json() for row in rows] for key, rows in plan.items()}))
    NodeIdentity.objects.create(name="operators-own", cert_subject="CN=x", roles="admin")

    out = io.StringIO()
    call_command("xds_demo_identities", "hospital-b", "--plan", str(plan_file), stdout=out)
    assert "7 demo identities, 7 added or updated" in out.getvalue()
    call_command("xds_demo_identities", "hospital-b", "--plan", str(plan_file), stdout=out)
    assert "7 demo identities, 0 added or updated" in out.getvalue()
    identities.forget()
    found = identities.for_certificate(pki.node("hospital-a").peer())
    assert found is not None and found.name == "hospital-a" and found.roles == frozenset({Role.CONSUMER})

    pki.node("hospital-a").cert.unlink()  # re-issued: the row follows the new fingerprint
    ensure_demo_pki(tmp_path / "pki")
    call_command("xds_demo_identities", "hospital-b", "--plan", str(plan_file), stdout=out)
    assert NodeIdentity.objects.get(name="hospital-a").cert_sha256 == pki.node("hospital-a").peer().sha256
    assert NodeIdentity.objects.filter(name="operators-own").exists()  # an operator's own rows are kept


def test_the_banner_prints_https_and_how_to_present_the_client_certificates(settings, tmp_path: Path,
                                                                            pki: DemoPki) -> None:  # type: ignore[no-untyped-def]
    settings.VAR_DIR = tmp_path
    sites = demo_sites(settings, "", pki)
    files = write_env_files(sites, tmp_path / "demo")
    text = supervisor.banner(sites, files, affinity_cx(NIST_PATIENT.affinity_id), NIST_STUDY_UID, sites[2],
                             B_NIST.local_cx(), B_NIST.local_id, B_NIST.issuer, 12.0, pki=pki)
    assert "http://" not in text
    consumer = pki.client(Role.CONSUMER)
    (curl,) = [line for line in text.splitlines() if "curl " in line]
    assert f"--cert {consumer.cert}" in curl and f"--key {consumer.key}" in curl
    assert f"--cacert {pki.ca.cert}" in curl and f"{sites[0].base_url}/" in curl
    assert str(pki.client(Role.ADMIN).p12) in text and "xds_pki issue" in text


def test_readiness_over_tls_presents_the_sites_own_certificate(pki: DemoPki) -> None:
    context = supervisor.site_client_context(pki, "hospital-a")
    assert context is not None and supervisor.site_client_context(None, "hospital-a") is None
    sent = context.get_ca_certs()
    assert [dict(x[0] for x in c["subject"])["commonName"] for c in sent] == ["XDS-I.b demo CA"]


def test_the_access_log_shows_the_path_without_the_query_string(settings) -> None:  # type: ignore[no-untyped-def]
    (web,) = [s for s in supervisor.node_services(8000, 1, ()) if s.name == "web"]
    fmt = web.argv[web.argv.index("--access-logformat") + 1]
    assert "%(U)s" in fmt and "%(r)s" not in fmt and "%(q)s" not in fmt


def test_the_demo_pki_has_a_node_certificate_for_every_demo_site(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from atna.pki_demo import DEMO_NODES

    settings.VAR_DIR = tmp_path
    assert tuple(site.key for site in demo_sites(settings)) == DEMO_NODES


@pytest.mark.django_db
def test_a_single_node_under_xds_tls_demo_gets_its_certificate_and_an_identity_table(settings, tmp_path: Path,
                                                                                   capsys) -> None:  # type: ignore[no-untyped-def]
    settings.XDS_PKI_DIR = tmp_path / "pki"
    settings.XDS_TLS = "off"
    assert supervisor.single_node_tls(settings) == {}
    settings.XDS_TLS = "demo"
    env = supervisor.single_node_tls(settings)
    pki = DemoPki(settings.XDS_PKI_DIR)
    assert env["XDS_TLS"] == "on" and env["XDS_TLS_CERT"] == str(pki.node("node").cert)
    call_command("xds_demo_identities", "node", "--plan", env["XDS_DEMO_IDENTITIES"], stdout=io.StringIO())
    identities.forget()
    found = identities.for_certificate(pki.node("node").peer())
    assert found is not None and found.roles == frozenset(Role)
    with pytest.raises(CommandError, match="no plan for domain"):
        call_command("xds_demo_identities", "domain", "--plan", env["XDS_DEMO_IDENTITIES"])
