"""The sites of the two-hospital demo affinity domain that ``make run`` starts (``XDS_DEMO=true``).

One machine plays an affinity domain the way hospitals run it: the **domain** node holds the Document
Registry and Repository (and the ITI-8 feed); **Hospital A** and **Hospital B** are each a real site - own
Imaging Document Source with its own Retrieve Location UID, AE title and DICOM port, own job worker and
Imaging Document Consumer, in front of its own Orthanc - and reach the domain only over HTTP (RAD-68,
ITI-18, ITI-43) and each other only by RAD-69.  A site is this same project run with its own
environment: :func:`demo_sites` builds each one's variables, :func:`write_env_files` writes them to
``var/demo/<site>.env`` so that any command run with ``XDS_ENV_FILE=var/demo/<site>.env`` acts as that
site.  Every port comes from a setting (``PORT``, ``HL7_PORT``, ``HOSPITAL_[AB]_*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def script_env(self, site: Site) -> dict[str, str]:
        return {"ORTHANC_AET": self.ae_title, "ORTHANC_DICOM_PORT": str(self.dicom_port),
                "ORTHANC_HTTP_PORT": str(self.http_port), "LOCAL_PACS_DIR": str(self.directory),
                "XDSI_AET": site.dicom_ae_title, "XDSI_HOST": "127.0.0.1", "XDSI_PORT": str(site.dicom_port),
                "LOCAL_PACS_WORKLISTS": str(self.worklists or "")}


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

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

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


def demo_sites(settings: Any, database_url: str = "") -> list[Site]:
    """The domain node and the two hospitals, from the settings of the process that runs ``make run``."""
    var = Path(settings.VAR_DIR) / "demo"
    domain_url = f"http://127.0.0.1:{settings.PORT}"
    common = {"XDS_DEMO": "false", "XDS_RUN_PACS": "false", "XDS_REPOSITORY_UNIQUE_ID": REPOSITORY_UNIQUE_ID,
              "XDS_HOME_COMMUNITY_ID": settings.XDS_HOME_COMMUNITY_ID}
    domain_var = var / "domain"
    sites = [Site(
        "domain", "Affinity domain (registry + repository)", settings.PORT,
        {**common, "XDS_VAR_DIR": str(domain_var),
         "DATABASE_URL": site_database_url(database_url, "domain", domain_var),
         "PORT": str(settings.PORT), "HL7_PORT": str(settings.HL7_PORT), "XDS_RUN_HL7": "true",
         "XDS_RUN_DICOM": "false", "XDS_RUN_JOBS": "false",
         # No PACS here: the defaults would name Hospital A's Orthanc (127.0.0.1:4242 / :8042).
         "DICOM_PACS": "", "DICOMWEB_URL": ""},
        ("web", "hl7"))]
    ports = {"A": (settings.HOSPITAL_A_HTTP_PORT, settings.HOSPITAL_A_DICOM_PORT, settings.HOSPITAL_A_PACS_DICOM_PORT,
                   settings.HOSPITAL_A_PACS_HTTP_PORT),
             "B": (settings.HOSPITAL_B_HTTP_PORT, settings.HOSPITAL_B_DICOM_PORT, settings.HOSPITAL_B_PACS_DICOM_PORT,
                   settings.HOSPITAL_B_PACS_HTTP_PORT)}
    for hospital in HOSPITALS:
        http_port, dicom_port, pacs_dicom, pacs_http = ports[hospital.letter]
        site_var = var / hospital.key
        ae = f"HOSP{hospital.letter}_IDS"
        pacs = Pacs(f"HOSP{hospital.letter}_PACS", pacs_dicom, pacs_http, site_var / "pacs", site_var / "worklists")
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
                          patient_authority=hospital.patient_authority))
    # Every site's portal: who it is, the other nodes it shows (their /healthz), the affinity domain's
    # patient-id authority (a bare id typed in the patient search is read as of this authority).
    for site in sites:
        site.env.update({
            "XDS_SITE_KEY": site.key, "XDS_SITE_NAME": site.title,
            "XDS_PORTAL_PEERS": ",".join(f"{other.title}={other.base_url}" for other in sites if other is not site),
            "XDS_AFFINITY_DOMAIN_AUTHORITY": AFFINITY_AUTHORITY})
    return sites


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
