"""The sites of the two-hospital demo affinity domain that ``make run`` starts (``XDS_DEMO=true``).

One machine plays an affinity domain the way hospitals run it: the **domain** node holds the Document
Registry and Repository (and the ITI-8 feed); **Hospital A** and **Hospital B** are each a real site - own
Imaging Document Source with its own Retrieve Location UID, AE title and DICOM port, own job worker and
Imaging Document Consumer, in front of its own Orthanc - and reach the domain only over HTTP (RAD-68,
ITI-18, ITI-43) and each other only by RAD-69.  A site is this same project run with its own
environment: :func:`demo_sites` builds each one's variables, :func:`write_env_files` writes them to
``var/demo/<site>.env`` so that any command run with ``XDS_ENV_FILE=var/demo/<site>.env`` acts as that
site.  Every port comes from a setting (``PORT``, ``HL7_PORT``, ``HOSPITAL_[AB]_*``).

With ``XDS_TLS=demo`` (issue 13) every site is a secure node: its env file carries ``XDS_TLS=on`` and its own
node certificate of the demo PKI (``atna.pki_demo``), every URL is ``https://``, and :func:`demo_identities` says
whom each site's identity table admits, with which roles: the other nodes as what they are to it (the hospitals
are the domain's sources and consumers, each other's consumers), the site itself (its own commands, its Orthanc),
and the role certificates of the PKI with their role.  Never "any certificate of the demo CA" (ITI TF-2a
3.19.6.1.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from atna.pki_demo import DEMO_ROLES, DemoPki
from xds_core.identity import Role

#: The NIST affinity domain's patient-id assigning authority (conformance corpus, IDS-AD002-a).
AFFINITY_AUTHORITY = "1.3.6.1.4.1.21367.2005.13.20.1000"
#: Demo OIDs under the IHE Connectathon test arc (1.3.6.1.4.1.21367.13): repository, imaging sources and
#: each hospital's own patient-id authority.
REPOSITORY_UNIQUE_ID = "1.3.6.1.4.1.21367.13.70.201"


@dataclass(frozen=True)
class Pacs:
    """A site's Orthanc, started by ``imaging_source/pacs/local-pacs.sh`` with :meth:`script_env`."""

    ae_title: str
    dicom_port: int
    http_port: int
    directory: Path
    #: Worklist files (*.wl) the PACS serves as the site's Modality Worklist SCP (the RIS's schedule).
    worklists: Path | None = None
    #: XDS_TLS=demo: the Orthanc speaks DICOM TLS and HTTPS with the site's node certificate.
    tls: bool = False

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    def script_env(self, site: Site) -> dict[str, str]:
        """The environment of ``local-pacs.sh`` for this site's Orthanc (under TLS: the site's XDS_TLS_*, which
        the script turns into Orthanc's DicomTls* / Ssl* options)."""
        out = {"ORTHANC_AET": self.ae_title, "ORTHANC_DICOM_PORT": str(self.dicom_port),
               "ORTHANC_HTTP_PORT": str(self.http_port), "LOCAL_PACS_DIR": str(self.directory),
               "XDSI_AET": site.dicom_ae_title, "XDSI_HOST": "127.0.0.1", "XDSI_PORT": str(site.dicom_port),
               "LOCAL_PACS_WORKLISTS": str(self.worklists or "")}
        out.update({key: site.env[key] for key in ("XDS_TLS", "XDS_TLS_CERT", "XDS_TLS_KEY", "XDS_TLS_CA")
                    if key in site.env})
        return out


@dataclass(frozen=True)
class Site:
    key: str  # "domain", "hospital-a", "hospital-b": file and service names
    title: str
    http_port: int
    env: dict[str, str]
    services: tuple[str, ...]  # of config.supervisor: web, hl7, dicom, jobs
    pacs: Pacs | None = None
    dicom_ae_title: str = ""
    dicom_port: int = 0
    imaging_source_id: str = ""
    patient_authority: str = ""  # the hospital's own patient-id assigning authority
    tls: bool = False  # XDS_TLS=demo: every listener of the site speaks TLS

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.http_port}"

    @property
    def is_hospital(self) -> bool:
        return self.pacs is not None


@dataclass(frozen=True)
class Hospital:
    key: str
    title: str
    letter: str
    imaging_source_id: str
    patient_authority: str


HOSPITALS = (
    Hospital("hospital-a", "Hospital A", "A", "1.3.6.1.4.1.21367.13.80.111", "1.3.6.1.4.1.21367.13.81.1"),
    Hospital("hospital-b", "Hospital B", "B", "1.3.6.1.4.1.21367.13.80.112", "1.3.6.1.4.1.21367.13.82.1"),
)


def site_database_url(database_url: str, site_key: str, var_dir: Path) -> str:
    """Each site has its own database: the embedded SQLite file under its own var directory, or, when
    ``DATABASE_URL`` names a PostgreSQL database, that name with the site's suffix (``xdsi_hospital_a``).
    Sites must not share one: each has its own job queue, endpoint directory and imaging-source state."""
    if not database_url.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{var_dir / 'xds.sqlite3'}"
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/") or "xdsi"
    return urlunsplit(parts._replace(path=f"/{name}_{site_key.replace('-', '_')}"))


def tls_env(pki: DemoPki, site_key: str) -> dict[str, str]:
    """A site's TLS settings under ``XDS_TLS=demo``: its own node certificate, the demo CA as its trust."""
    node = pki.node(site_key)
    return {"XDS_TLS": "on", "XDS_TLS_CERT": str(node.cert), "XDS_TLS_KEY": str(node.key),
            "XDS_TLS_CA": str(pki.ca.cert), "XDS_TLS_PINNED": "", "XDS_PKI_DIR": str(pki.directory)}


def demo_sites(settings: Any, database_url: str = "", pki: DemoPki | None = None) -> list[Site]:
    """The domain node and the two hospitals, from the settings of the process that runs ``make run``.

    ``pki`` (``XDS_TLS=demo``): every site a secure node with its node certificate of that PKI.
    """
    var = Path(settings.VAR_DIR) / "demo"
    tls = pki is not None
    scheme = "https" if tls else "http"
    domain_url = f"{scheme}://127.0.0.1:{settings.PORT}"
    common = {"XDS_DEMO": "false", "XDS_RUN_PACS": "false", "XDS_REPOSITORY_UNIQUE_ID": REPOSITORY_UNIQUE_ID,
              "XDS_HOME_COMMUNITY_ID": settings.XDS_HOME_COMMUNITY_ID}
    domain_var = var / "domain"
    sites = [Site(
        "domain", "Affinity domain (registry + repository)", settings.PORT,
        {**common, "XDS_VAR_DIR": str(domain_var),
         "DATABASE_URL": site_database_url(database_url, "domain", domain_var),
         "PORT": str(settings.PORT), "HL7_PORT": str(settings.HL7_PORT), "XDS_RUN_HL7": "true",
         # The job worker chains, anchors, ships and prunes the node's audit trail (atna) and reconciles the
         # repository: the domain needs one too.
         "XDS_RUN_DICOM": "false", "XDS_RUN_JOBS": "true",
         # No PACS here: the defaults would name Hospital A's Orthanc (127.0.0.1:4242 / :8042).
         "DICOM_PACS": "", "DICOMWEB_URL": ""},
        ("web", "hl7", "jobs"), tls=tls)]
    ports = {"A": (settings.HOSPITAL_A_HTTP_PORT, settings.HOSPITAL_A_DICOM_PORT, settings.HOSPITAL_A_PACS_DICOM_PORT,
                   settings.HOSPITAL_A_PACS_HTTP_PORT),
             "B": (settings.HOSPITAL_B_HTTP_PORT, settings.HOSPITAL_B_DICOM_PORT, settings.HOSPITAL_B_PACS_DICOM_PORT,
                   settings.HOSPITAL_B_PACS_HTTP_PORT)}
    for hospital in HOSPITALS:
        http_port, dicom_port, pacs_dicom, pacs_http = ports[hospital.letter]
        site_var = var / hospital.key
        ae = f"HOSP{hospital.letter}_IDS"
        pacs = Pacs(f"HOSP{hospital.letter}_PACS", pacs_dicom, pacs_http, site_var / "pacs", site_var / "worklists",
                    tls=tls)
        env = {
            **common, "XDS_VAR_DIR": str(site_var),
            "DATABASE_URL": site_database_url(database_url, hospital.key, site_var),
            # Sync workers: a RAD-69 answer or a portal zip download holds one for its whole length, and two
            # zips may run at once (XDS_PORTAL_ZIP_CONCURRENCY): two more serve the pages meanwhile.
            "PORT": str(http_port), "WEB_CONCURRENCY": "4",
            "XDS_RUN_HL7": "false", "XDS_RUN_DICOM": "true", "XDS_RUN_JOBS": "true",
            # The domain's actors, over HTTP: RAD-68 to the repository, ITI-18 to the registry.
            "XDS_REPOSITORY_URL": f"{domain_url}/xds/repository",
            "XDS_CONSUMER_REGISTRY_URL": f"{domain_url}/xds/registry",
            "XDS_IMAGING_SOURCE_ID": hospital.imaging_source_id,
            "XDS_IMAGING_SOURCE_PATIENT_AUTHORITY": hospital.patient_authority,
            "XDS_IMAGING_AUTHOR_INSTITUTION": f"{hospital.title}^^^^^^^^^{hospital.imaging_source_id}",
            "XDS_SITE_CONSUMER_IDENTITY": f"XDSI_CONSUMER@{hospital.key.upper()}",
            "DICOM_AE_TITLE": ae, "DICOM_PORT": str(dicom_port),
            "DICOM_PACS": f"{pacs.ae_title}@127.0.0.1:{pacs_dicom}", "DICOMWEB_URL": pacs.dicomweb_url,
            # Studies a modality sends straight to the PACS are published once the PACS has held them
            # unchanged for a minute (Orthanc does not forward them to us, so it is polled).
            "DICOM_STABLE_DELAY": "60", "DICOM_STABLE_POLL": "15",
            "XDS_PREFETCH": "true",
            # The site's schedule: its PACS serves the worklist files of var/demo/<site>/worklists.
            "DICOM_WORKLIST": f"{pacs.ae_title}@127.0.0.1:{pacs_dicom}", "DICOM_WORKLIST_POLL": "10",
            # The NIST study Hospital A holds is from 2015: a look-back of 20 years keeps it a relevant prior.
            "XDS_PREFETCH_LOOKBACK_DAYS": "7300",
        }
        sites.append(Site(hospital.key, hospital.title, http_port, env, ("web", "dicom", "jobs"), pacs=pacs,
                          dicom_ae_title=ae, dicom_port=dicom_port, imaging_source_id=hospital.imaging_source_id,
                          patient_authority=hospital.patient_authority, tls=tls))
    # Every site's portal: who it is, the other nodes it shows (their /healthz), the affinity domain's
    # patient-id authority (a bare id typed in the patient search is read as of this authority).
    for site in sites:
        site.env.update({
            "XDS_SITE_KEY": site.key, "XDS_SITE_NAME": site.title,
            "XDS_PORTAL_PEERS": ",".join(f"{other.title}={other.base_url}" for other in sites if other is not site),
            "XDS_AFFINITY_DOMAIN_AUTHORITY": AFFINITY_AUTHORITY})
        if pki is not None:
            site.env.update(tls_env(pki, site.key))
    return sites


@dataclass(frozen=True)
class DemoIdentity:
    """One row of a site's node identity table under ``XDS_TLS=demo`` (``manage.py xds_demo_identities``)."""

    name: str
    cert: Path
    roles: tuple[Role, ...]
    source_ids: tuple[str, ...] = ()
    description: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "cert": str(self.cert), "roles": [r.value for r in self.roles],
                "source_ids": list(self.source_ids), "description": self.description}


def demo_identities(sites: list[Site], pki: DemoPki) -> dict[str, list[DemoIdentity]]:
    """Whom each site admits (its identity table), and as what: a node calling another is that node's source,
    consumer or feed; the role certificates of the PKI have their role everywhere.

    - the domain: each hospital is a source (RAD-68 under its imaging source id, the submission set's sourceId)
      and a consumer (ITI-18, ITI-43);
    - a hospital: the other hospital is a consumer (RAD-69, WADO); the domain node is a consumer too (its
      portal reads the others' ``/healthz``);
    - every site: itself (its own commands, e.g. ``xds_demo_mpps`` to its DICOM listener, and its Orthanc,
      which presents the site's certificate) as source, consumer and operator.
    """
    hospitals = [s for s in sites if s.is_hospital]
    plan: dict[str, list[DemoIdentity]] = {}
    for site in sites:
        rows = [DemoIdentity(site.key, pki.node(site.key).cert, (Role.SOURCE, Role.CONSUMER, Role.OPERATOR),
                             (site.imaging_source_id,) if site.imaging_source_id else (),
                             "this node (demo): its own commands and its PACS")]
        if site.key == "domain":
            rows += [DemoIdentity(h.key, pki.node(h.key).cert, (Role.SOURCE, Role.CONSUMER),
                                  (h.imaging_source_id,), f"{h.title} (demo): RAD-68, ITI-18, ITI-43")
                     for h in hospitals]
        else:
            rows += [DemoIdentity(other.key, pki.node(other.key).cert, (Role.CONSUMER,), (),
                                  f"{other.title} (demo): " + ("RAD-69, WADO" if other.is_hospital else "/healthz"))
                     for other in sites if other is not site]
        rows += [DemoIdentity(f"demo-{role.value}", pki.client(role).cert, (role,), (),
                              f"demo client certificate of the {role.value} role") for role in DEMO_ROLES]
        plan[site.key] = rows
    return plan


def endpoint_directory(sites: list[Site]) -> list[dict[str, str]]:
    """Every site's consumer directory: the domain's repository (ITI-43) and each imaging source (RAD-69)."""
    domain = next(s for s in sites if s.key == "domain")
    entries = [{"kind": "repository", "unique_id": REPOSITORY_UNIQUE_ID, "url": f"{domain.base_url}/xds/repository",
                "description": "Affinity domain repository (demo)"}]
    entries += [{"kind": "imaging_source", "unique_id": s.imaging_source_id,
                 "url": f"{s.base_url}/xds/imaging-source", "description": f"{s.title} imaging source (demo)"}
                for s in sites if s.is_hospital]
    return entries


def write_env_files(sites: list[Site], directory: Path) -> dict[str, Path]:
    """``<directory>/<site>.env`` for each site (mode 0600: a site's configuration may hold secrets), and
    each site's own var directory (its SQLite file, documents, spool)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for site in sites:
        Path(site.env["XDS_VAR_DIR"]).mkdir(parents=True, exist_ok=True)
        path = directory / f"{site.key}.env"
        text = f"# {site.title}: written by `make run` (demo/sites.py); XDS_ENV_FILE={path} acts as this site\n"
        text += "".join(f"{key}={value}\n" for key, value in sorted(site.env.items()))
        tmp = path.with_suffix(".env.tmp")
        tmp.write_text(text)
        tmp.chmod(0o600)
        tmp.replace(path)
        out[site.key] = path
    return out
