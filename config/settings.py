"""Django settings for the XDS-I.b suite.

Every value comes from an environment variable through :mod:`config.env`,
which fails loudly on a bad value.  The README's configuration table lists
them all (a test keeps the two in step).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url

from config import env

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.string("XDS_VAR_DIR", str(BASE_DIR / "var"),
                          "Directory for run-time state (SQLite file, documents, logs, bench output)."))


def _secret_key() -> str:
    value = env.string("SECRET_KEY", "",
                       "Django secret key. Unset: a random key is generated once and kept in var/secret_key.")
    if value:
        return value
    key_file = VAR_DIR / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


SECRET_KEY = _secret_key()
DEBUG = env.boolean("DEBUG", False, "Django debug mode. Never in production.")
ALLOWED_HOSTS = env.csv("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver",
                        "Comma-separated host names this server answers to.")
PORT = env.integer("PORT", 8000, "HTTP port `make run` listens on (127.0.0.1).", minimum=1, maximum=65535)
WEB_CONCURRENCY = env.integer("WEB_CONCURRENCY", os.cpu_count() or 2,
                              "gunicorn worker processes (default: number of cores).", minimum=1)

DATABASES = {
    "default": env.custom(
        "DATABASE_URL", f"sqlite:///{VAR_DIR / 'xds.sqlite3'}",
        "Database. Default: embedded SQLite under var/. PostgreSQL: postgres://user:pass@127.0.0.1:5432/xdsi",
        lambda value: dj_database_url.parse(value, conn_max_age=600),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout: concurrent gunicorn workers serialise writes
    # instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
         "transaction_mode": "IMMEDIATE"})
    DATABASES["default"]["CONN_MAX_AGE"] = 0

# --- XDS affinity domain -------------------------------------------------------------
XDS_HOME_COMMUNITY_ID = env.string(
    "XDS_HOME_COMMUNITY_ID", "urn:oid:1.3.6.1.4.1.21367.13.70.200",
    "homeCommunityId put on stored-query results (urn:oid:...).")
XDS_REGISTRY_URL = env.url(
    "XDS_REGISTRY_URL", "",
    "Where the repository sends ITI-42. Empty: the registry in this server, called in process.")
XDS_REPOSITORY_UNIQUE_ID = env.oid(
    "XDS_REPOSITORY_UNIQUE_ID", "1.3.6.1.4.1.21367.13.70.201",
    "repositoryUniqueId of this Document Repository.")
XDS_AFFINITY_DOMAIN_CODES = env.string(
    "XDS_AFFINITY_DOMAIN_CODES", "",
    "Path of a codes.xml (NIST format) restricting codes and assigning authorities. "
    "Empty: accept any well-formed code.")
XDS_MAX_REQUEST_SIZE = env.size(
    "XDS_MAX_REQUEST_SIZE", "4GiB", "Largest HTTP request body accepted (bytes, or 100MB, 2GiB, ...).")
XDS_MAX_XML_SIZE = env.size(
    "XDS_MAX_XML_SIZE", "64MiB", "Largest SOAP/XML part parsed (the MTOM root part or a plain SOAP body).")
XDS_MAX_DOCUMENT_SIZE = env.size(
    "XDS_MAX_DOCUMENT_SIZE", "4GiB", "Largest single document a repository accepts.")
XDS_MAX_QUERY_RESULTS = env.integer(
    "XDS_MAX_QUERY_RESULTS", 5000, "Stored-query result limit; above it XDSTooManyResults.", minimum=1)
XDS_MPQ_ENABLED = env.boolean(
    "XDS_MPQ_ENABLED", False, "Enable ITI-51 Multi-Patient Stored Query.")
XDS_DOCUMENT_DIR = env.string(
    "XDS_DOCUMENT_DIR", str(VAR_DIR / "documents"), "Where the repository stores documents (content-addressed).")
HL7_PORT = env.integer("HL7_PORT", 2575, "MLLP port of the ITI-8 patient identity feed.", minimum=1, maximum=65535)

# --- Imaging Document Source ---------------------------------------------------------
XDS_IMAGING_SOURCE_ID = env.oid(
    "XDS_IMAGING_SOURCE_ID", "1.3.6.1.4.1.21367.13.80.110",
    "repositoryUniqueId of the Imaging Document Source (= KOS Retrieve Location UID).")
XDS_REPOSITORY_URL = env.url(
    "XDS_REPOSITORY_URL", "", "Where the Imaging Document Source sends RAD-68. Empty: this server's repository.")
DICOM_AE_TITLE = env.custom("DICOM_AE_TITLE", "XDSI_IDS", "AE title of our DICOM SCP/SCU.", env.ae_title)
DICOM_PORT = env.integer("DICOM_PORT", 11112, "Port of our DICOM SCP (C-STORE, MPPS).", minimum=1, maximum=65535)
DICOM_PACS = env.custom("DICOM_PACS", "ORTHANC@127.0.0.1:4242", "The local PACS, AET@host:port.", env.dicom_peer)
DICOMWEB_URL = env.url("DICOMWEB_URL", "", "DICOMweb base URL of the PACS (QIDO-RS/WADO-RS), e.g. http://127.0.0.1:8042/dicom-web")

# --- `make run` supervisor (config/supervisor.py) ------------------------------------
XDS_RUN_PACS = env.boolean("XDS_RUN_PACS", True, "`make run` starts the local Orthanc PACS and loads demo studies.")
XDS_RUN_HL7 = env.boolean("XDS_RUN_HL7", True, "`make run` starts the ITI-8 MLLP listener.")
XDS_RUN_DICOM = env.boolean("XDS_RUN_DICOM", True, "`make run` starts the DICOM listener (C-STORE + MPPS SCP).")

LOG_LEVEL = env.choice("LOG_LEVEL", "INFO", "Log level.", ("DEBUG", "INFO", "WARNING", "ERROR"))

# --- Django --------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "xds_registry",
    "xds_repository",
    "imaging_source",
    "kos",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    # Repository documents: content-addressed files (xds_repository.storage).  Point
    # BACKEND at any Django storage (e.g. an object store) to move them.
    "xds_documents": {
        "BACKEND": "xds_repository.storage.ContentAddressedStorage",
        "OPTIONS": {"location": XDS_DOCUMENT_DIR},
    },
}

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
# SOAP bodies are read by our own streaming parser, not by Django's form parser.
DATA_UPLOAD_MAX_MEMORY_SIZE = None

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
