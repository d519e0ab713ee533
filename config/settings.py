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
_ENV_FILE = env.string(
    "XDS_ENV_FILE", "", "A file of KEY=VALUE settings applied over the environment before any other is read "
    "(a site's configuration; `make run` writes one per demo site under var/demo/).")
if _ENV_FILE:
    env.apply_env_file(_ENV_FILE)
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
# The web server's worker (config/http_worker.py): threads per process and the slow-client rules.
XDS_HTTP_THREADS = env.integer("XDS_HTTP_THREADS", 8, "Request threads per web worker process.", minimum=1,
                               maximum=256)
XDS_HTTP_MIN_RATE = env.integer(
    "XDS_HTTP_MIN_RATE", 1024, "Slowest accepted upload (bytes/s, averaged over XDS_HTTP_RATE_WINDOW) while a "
    "request is received; slower clients are dropped (408).", minimum=1)
XDS_HTTP_RATE_WINDOW = env.integer(
    "XDS_HTTP_RATE_WINDOW", 30, "Seconds over which XDS_HTTP_MIN_RATE is averaged.", minimum=1, maximum=3600)
XDS_HTTP_PREBUFFER = env.size(
    "XDS_HTTP_PREBUFFER", "256KiB", "Request bodies up to this size are read whole before a thread is used.")
XDS_HTTP_SEND_TIMEOUT = env.integer(
    "XDS_HTTP_SEND_TIMEOUT", 60, "Seconds a send to a client may make no progress before it is dropped.",
    minimum=1, maximum=3600)
# Measured (make bench-ab against the release before, 3 interleaved pairs each): with a pool ITI-42 ran at 0.70x
# and 0.88x, without it at 1.02x (a pool checkout and its check cost ~1.7 ms of CPU per request under sync
# workers).  So the default is a persistent connection per thread; the pool is for machines where
# WEB_CONCURRENCY x XDS_HTTP_THREADS would pass PostgreSQL's max_connections.
XDS_DB_POOL_SIZE = env.integer(
    "XDS_DB_POOL_SIZE", 0, "PostgreSQL: 0 (default): a persistent connection per thread, checked before reuse "
    "(a node opens up to WEB_CONCURRENCY x XDS_HTTP_THREADS); N: one pool of at most N connections per process, "
    "shared by its threads.", minimum=0, maximum=256)

DATABASES = {
    "default": env.custom(
        "DATABASE_URL", f"sqlite:///{VAR_DIR / 'xds.sqlite3'}",
        "Database. Default: embedded SQLite under var/. PostgreSQL: postgres://user:pass@127.0.0.1:5432/xdsi",
        # Persistent connections (600 s) are checked before their first use in each request or unit of
        # work (CONN_HEALTH_CHECKS, Django >= 4.1): after a PostgreSQL restart a web worker, listener or
        # job worker reconnects instead of failing its next request on the dead connection.
        lambda value: dj_database_url.parse(value, conn_max_age=600, conn_health_checks=True),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout: concurrent gunicorn workers serialise writes
    # instead of failing with "database is locked".  synchronous=FULL: in WAL mode NORMAL syncs only at
    # checkpoints, so a commit acknowledged just before a power loss could be rolled back; FULL syncs the
    # WAL on every commit, so an acknowledged submission survives (https://sqlite.org/pragma.html#pragma_synchronous).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
         "transaction_mode": "IMMEDIATE"})
    DATABASES["default"]["CONN_MAX_AGE"] = 0
elif XDS_DB_POOL_SIZE:
    # PostgreSQL with XDS_DB_POOL_SIZE: one pool of connections per process (Django >= 5.1, psycopg_pool), shared by
    # its threads.  The web worker runs XDS_HTTP_THREADS threads per process (config/http_worker.py): a persistent
    # connection per thread is workers x threads connections per node (past PostgreSQL's default max_connections of
    # 100 on a 16-core machine), most of them idle.  A request takes a connection from the pool when it first
    # needs one and gives it back when it ends; with CONN_HEALTH_CHECKS each is checked before it is handed
    # out (Django passes the pool psycopg_pool's check_connection), so after a PostgreSQL restart the next
    # request reconnects instead of failing.
    # After a database outage the pool retries its connection 1, 2, 4, 8... s apart (psycopg_pool's backoff,
    # no cap below reconnect_timeout, 300 s by default), so a 30 s outage left a process without the database
    # ~30 s more (measured: tests/jobs/test_worker_database_outage.py).  A short reconnect_timeout ends each
    # series of attempts soon; the next request starts a new one at once.  timeout: how long a request waits
    # for a connection (none free, or the database away) before failing.
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # pooled: Django refuses persistent connections with a pool
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1, "max_size": XDS_DB_POOL_SIZE, "timeout": 10.0, "reconnect_timeout": 10.0}

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
XDS_MAX_XML_NODES = env.integer(
    "XDS_MAX_XML_NODES", 1_000_000, "Most elements and attributes (counted as '<' and '=' while the bytes "
    "arrive, before parsing) in one SOAP/XML part; beyond: 413 like an oversized part. A parsed tree costs "
    "~120 bytes per node; a realistic ITI-42 counts ~46,000 per MB.", minimum=1000)
XDS_MTOM_MEMORY_BUDGET = env.size(
    "XDS_MTOM_MEMORY_BUDGET", "8MiB", "Bytes of MTOM parts one request keeps in memory, all parts together; "
    "past it every further part spills to a file (each part also spills past 256 KiB).")
XDS_MAX_DOCUMENT_SIZE = env.size(
    "XDS_MAX_DOCUMENT_SIZE", "4GiB", "Largest single document a repository accepts.")
XDS_ITI43_MAX_DOCUMENTS = env.integer(
    "XDS_ITI43_MAX_DOCUMENTS", 1000, "Most DocumentRequests one ITI-43 Retrieve Document Set answers; the ones "
    "beyond get XDSRepositoryError (PartialSuccess).", minimum=1)
XDS_ITI43_MAX_BYTES = env.size(
    "XDS_ITI43_MAX_BYTES", "2GiB", "Most document bytes one ITI-43 returns (a document named twice counts "
    "twice); a document that does not fit gets XDSRepositoryError (PartialSuccess, Failure if none fits).")
XDS_MAX_QUERY_RESULTS = env.integer(
    "XDS_MAX_QUERY_RESULTS", 5000, "Stored-query result limit; above it XDSTooManyResults.", minimum=1)
XDS_MPQ_ENABLED = env.boolean(
    "XDS_MPQ_ENABLED", False, "Enable ITI-51 Multi-Patient Stored Query.")
XDS_DOCUMENT_DIR = env.string(
    "XDS_DOCUMENT_DIR", str(VAR_DIR / "documents"), "Where the repository stores documents (content-addressed).")
XDS_MIN_FREE_SPACE = env.size(
    "XDS_MIN_FREE_SPACE", "1GiB", "Free space the document store's file system keeps: ITI-41/RAD-68 that would "
    "leave less are refused (XDSRepositoryOutOfResources) and /healthz is degraded. 0: no check.")
XDS_REGISTRY_TIMEOUT = env.integer(
    "XDS_REGISTRY_TIMEOUT", 120, "Seconds the repository waits on a silent registry (ITI-42, ITI-18) before "
    "giving up; a registration whose answer never came stays pending until reconciled.", minimum=1)
XDS_REPOSITORY_RECONCILE_INTERVAL = env.integer(
    "XDS_REPOSITORY_RECONCILE_INTERVAL", 300, "Seconds between runs of the repository's reconcile job (settles "
    "pending documents with the registry, sweeps temporary files of dead processes).", minimum=10)
XDS_REPOSITORY_RECONCILE_GRACE = env.integer(
    "XDS_REPOSITORY_RECONCILE_GRACE", 900, "Age (seconds) after which the reconcile job settles a pending "
    "document whose writer still runs or cannot be checked (another host); a dead writer's at once.", minimum=0)
HL7_PORT = env.integer("HL7_PORT", 2575, "MLLP port of the ITI-8 patient identity feed.", minimum=1, maximum=65535)
# The ITI-8 listener's bounds (xds_core.mllp.ServerLimits): connections beyond the caps are closed at once;
# a held connection costs a socket, not a thread (one I/O thread + HL7_WORKERS).
HL7_MAX_CONNECTIONS = env.integer(
    "HL7_MAX_CONNECTIONS", 32, "ITI-8 MLLP: most connections held at once; more are closed on accept.",
    minimum=1, maximum=10000)
HL7_MAX_CONNECTIONS_PER_PEER = env.integer(
    "HL7_MAX_CONNECTIONS_PER_PEER", 8, "ITI-8 MLLP: most connections held at once from one IP address.",
    minimum=1, maximum=10000)
HL7_WORKERS = env.integer(
    "HL7_WORKERS", 4, "ITI-8 MLLP: threads applying messages (whatever the number of connections).",
    minimum=1, maximum=64)
HL7_IDLE_TIMEOUT = env.integer(
    "HL7_IDLE_TIMEOUT", 120, "ITI-8 MLLP: seconds a connection may wait between messages before it is closed.",
    minimum=1, maximum=86400)
HL7_MIN_RATE = env.size(
    "HL7_MIN_RATE", "1KiB", "ITI-8 MLLP: bytes/s a message, once begun, must keep up over each HL7_RATE_WINDOW.")
HL7_RATE_WINDOW = env.integer(
    "HL7_RATE_WINDOW", 30, "ITI-8 MLLP: seconds over which HL7_MIN_RATE is averaged (no byte that long: dropped).",
    minimum=1, maximum=3600)
HL7_FRAME_DEADLINE = env.integer(
    "HL7_FRAME_DEADLINE", 120, "ITI-8 MLLP: seconds within which a message, once begun, must have arrived whole.",
    minimum=1, maximum=3600)
# MLLP over TLS (issue 13, helper B): the handshake runs on the I/O thread with its own deadline, so a silent
# TLS client costs a socket for this long, never a worker.
HL7_HANDSHAKE_TIMEOUT = env.integer(
    "HL7_HANDSHAKE_TIMEOUT", 10, "ITI-8 MLLP over TLS (XDS_TLS on): seconds within which a connection's TLS "
    "handshake must be complete, else it is closed (and a Security Alert recorded).", minimum=1, maximum=300)

# --- Imaging Document Source ---------------------------------------------------------
XDS_IMAGING_SOURCE_ID = env.oid(
    "XDS_IMAGING_SOURCE_ID", "1.3.6.1.4.1.21367.13.80.110",
    "repositoryUniqueId of the Imaging Document Source (= KOS Retrieve Location UID).")
XDS_REPOSITORY_URL = env.url(
    "XDS_REPOSITORY_URL", "", "Where the Imaging Document Source sends RAD-68. Empty: this server's repository.")
XDS_IMAGING_PENDING_TIMEOUT = env.integer(
    "XDS_IMAGING_PENDING_TIMEOUT", 900, "Seconds a RAD-68 send may stay unanswered (its publisher busy, or killed) "
    "before the next publication of the study settles it by sending the very same submission again (never a "
    "second manifest). Keep it longer than one RAD-68 exchange.", minimum=1)
DICOM_AE_TITLE = env.custom("DICOM_AE_TITLE", "XDSI_IDS", "AE title of our DICOM SCP/SCU.", env.ae_title)
DICOM_PORT = env.integer("DICOM_PORT", 11112, "Port of our DICOM SCP (C-STORE, MPPS).", minimum=1, maximum=65535)
DICOM_PACS = env.custom("DICOM_PACS", "ORTHANC@127.0.0.1:4242", "The local PACS, AET@host:port.", env.dicom_peer)
DICOMWEB_URL = env.url(
    "DICOMWEB_URL", "http://127.0.0.1:8042/dicom-web",
    "DICOMweb base URL of the PACS (QIDO-RS/WADO-RS; the fastest fetch path). Empty: DIMSE only (C-FIND/C-GET).")
# Time rules for the PACS's answers during RAD-69 / RAD-55 (issue 15): not total deadlines, so a 1 GB
# transfer over a slow WAN passes; a PACS that stops answering fails the request after one deadline.
# Same defaults as imaging_source.dicom.instances.DEFAULT_DEADLINES.
XDS_PACS_FIRST_BYTE_TIMEOUT = env.integer(
    "XDS_PACS_FIRST_BYTE_TIMEOUT", 30, "RAD-69/RAD-55: seconds the PACS may take to begin answering a retrieve "
    "(WADO-RS status line; DIMSE association answer, first C-FIND/C-GET/C-MOVE response or sub-operation). "
    "Beyond: RAD-69 XDSRepositoryError, RAD-55 504.", minimum=1, maximum=3600)
XDS_PACS_IDLE_TIMEOUT = env.integer(
    "XDS_PACS_IDLE_TIMEOUT", 60, "RAD-69/RAD-55: seconds the PACS may stay silent in the middle of an answer "
    "(between two reads of a WADO-RS answer, two DIMSE PDUs; C-MOVE: two pending responses, so at least the time "
    "one instance takes to reach our listener).", minimum=1, maximum=3600)
# Publication (RAD-68) metadata. Coded values are code^^scheme^display; defaults follow the NIST
# XDS-I reference metadata (conformance IDS-DEPT002-a/kos/metadata.xml) where the NIST affinity domain
# (codes.xml) accepts the value; typeCode/contentTypeCode are imaging codes, not the sample's lab report.
XDS_IMAGING_CLASS_CODE = env.custom(
    "XDS_IMAGING_CLASS_CODE", "DEMO-Index^^1.3.6.1.4.1.21367.100.1^Document Index",
    "classCode of published manifests (code^^scheme^display).", env.xds_code)
XDS_IMAGING_TYPE_CODE = env.custom(
    "XDS_IMAGING_TYPE_CODE", "18748-4^^2.16.840.1.113883.6.1^Diagnostic Imaging Report",
    "typeCode of published manifests (code^^scheme^display).", env.xds_code)
XDS_IMAGING_CONFIDENTIALITY_CODE = env.custom(
    "XDS_IMAGING_CONFIDENTIALITY_CODE", "R^^2.16.840.1.113883.5.25^Restricted",
    "confidentialityCode of published manifests (code^^scheme^display).", env.xds_code)
XDS_IMAGING_FACILITY_TYPE_CODE = env.custom(
    "XDS_IMAGING_FACILITY_TYPE_CODE", "Outpatient^^Connect-a-thon healthcareFacilityTypeCodes 2^Outpatient",
    "healthcareFacilityTypeCode of published manifests (code^^scheme^display).", env.xds_code)
XDS_IMAGING_PRACTICE_SETTING_CODE = env.custom(
    "XDS_IMAGING_PRACTICE_SETTING_CODE", "R-3027B^^SRT^Radiology",
    "practiceSettingCode of published manifests (code^^scheme^display).", env.xds_code)
XDS_IMAGING_CONTENT_TYPE_CODE = env.custom(
    "XDS_IMAGING_CONTENT_TYPE_CODE", "18748-4^^2.16.840.1.113883.6.1^Diagnostic Imaging Report",
    "SubmissionSet contentTypeCode of RAD-68 submissions (code^^scheme^display).", env.xds_code)
XDS_IMAGING_LANGUAGE_CODE = env.string(
    "XDS_IMAGING_LANGUAGE_CODE", "en-us", "languageCode of published manifests.")
XDS_IMAGING_ANATOMY_SCHEME = env.choice(
    "XDS_IMAGING_ANATOMY_SCHEME", "SCT", "Coding scheme of anatomic-region event codes (CID 4): SCT (current "
    "DICOM), SRT or SNM3 (legacy SNOMED ids), none (modalities only).", ("SCT", "SRT", "SNM3", "none"))
XDS_IMAGING_AUTHOR_INSTITUTION = env.string(
    "XDS_IMAGING_AUTHOR_INSTITUTION", "", "authorInstitution (XON) on manifests; empty: no author.")
XDS_IMAGING_SOURCE_PATIENT_AUTHORITY = env.oid(
    "XDS_IMAGING_SOURCE_PATIENT_AUTHORITY", "1.3.6.1.4.1.21367.1800.13.20.1000",
    "Assigning authority OID of local DICOM Patient IDs without an OID Issuer (sourcePatientId).", required=False)
XDS_IMAGING_PATIENT_REWRITE = env.string(
    "XDS_IMAGING_PATIENT_REWRITE", "", "Patient-id authority rewrite rules issuer=>affinityOID, comma separated, "
    "'*' = any issuer (e.g. *=>1.3.6.1.4.1.21367.2005.13.20.1000). Table mappings win; empty: table only.")
XDS_IMAGING_RETRIEVE_AE_TITLE = env.string(
    "XDS_IMAGING_RETRIEVE_AE_TITLE", "", "Retrieve AE Title written in manifests (who serves C-MOVE/C-GET). "
    "Empty: the AE title of DICOM_PACS (else DICOM_AE_TITLE).")
XDS_IMAGING_RETRIEVE_URL_BASE = env.url(
    "XDS_IMAGING_RETRIEVE_URL_BASE", "", "WADO-RS base URL written as Retrieve URL (0008,1190) per series in "
    "manifests, e.g. https://pacs.example/dicom-web. Empty: no Retrieve URL.")
DICOM_HOST = env.string("DICOM_HOST", "127.0.0.1", "Address our DICOM SCP (C-STORE, MPPS) binds to.")
DICOM_FETCH_METHOD = env.choice(
    "DICOM_FETCH_METHOD", "", "How RAD-69 fetches from the PACS: c-get, c-move (to our SCP) or wado-rs. "
    "Empty: wado-rs when DICOMWEB_URL is set, else c-get.", ("", "c-get", "c-move", "wado-rs"))
DICOM_SPOOL_DIR = env.string(
    "DICOM_SPOOL_DIR", str(VAR_DIR / "dicom" / "spool"), "Where our C-STORE SCP spools C-MOVE'd instances for RAD-69.")
DICOM_MAX_ASSOCIATIONS = env.integer(
    "DICOM_MAX_ASSOCIATIONS", 64, "Associations our DICOM listener holds at once; beyond: A-ASSOCIATE-RJ "
    "rejected-transient, local-limit-exceeded (PS3.8 Table 9-21).", minimum=1, maximum=1000)
DICOM_MAX_ASSOCIATIONS_PER_AE = env.integer(
    "DICOM_MAX_ASSOCIATIONS_PER_AE", 16, "Associations one Calling AE Title may hold at once on our DICOM "
    "listener (so one peer cannot lock the others out).", minimum=1, maximum=1000)
DICOM_MAX_PDU_LENGTH = env.integer(
    "DICOM_MAX_PDU_LENGTH", 1048576, "Maximum Length (PS3.8 D.1) our DICOM listener advertises for P-DATA-TF; "
    "a longer PDU, or an association PDU over 256 KiB, is answered with A-ABORT before it is read.",
    minimum=4096, maximum=64 * 1024 * 1024)
DICOM_NETWORK_TIMEOUT = env.integer(
    "DICOM_NETWORK_TIMEOUT", 60, "Seconds an association to our DICOM listener may stay silent (idle or "
    "stalled mid-PDU) before it is aborted.", minimum=1, maximum=3600)
DICOM_ACSE_TIMEOUT = env.integer(
    "DICOM_ACSE_TIMEOUT", 30, "Seconds a connection to our DICOM listener has to complete association "
    "negotiation (ARTIM timer).", minimum=1, maximum=600)
DICOM_STABLE_DELAY = env.integer(
    "DICOM_STABLE_DELAY", 300, "Seconds without new instances after which a study counts as stable and is "
    "published (PACS without MPPS). 0 disables stable-study publication.", minimum=0)
XDS_RAD69_ROOT_LAST = env.boolean(
    "XDS_RAD69_ROOT_LAST", True, "RAD-69: stream instances while the PACS sends them, SOAP root part last in "
    "the MTOM package, named by the multipart start parameter (lower latency and memory; what `make "
    "bench-imaging` measures). Default on because the standards identify the root by start, not by position "
    "(RFC 2387 3.2: the first part is the root only without start; XOP 1.0 4.1: part order is not significant). "
    "Off: root part first, after the whole fetch, for consumers that take the first part as the root whatever "
    "start says - zeep 4.3.3 does (tests/imaging_source/test_rad69_interop.py: zeep reads RAD-69 with this off, "
    "not with it on) - or that need MS-XOPP streaming order.")
DICOM_WORKLIST = env.custom(
    "DICOM_WORKLIST", "", "Modality Worklist SCP (AET@host:port) the DICOM listener polls (C-FIND, PS3.4 K.6); "
    "each new scheduled step is announced (with XDS_PREFETCH: its patient's priors are prefetched). Empty: none.",
    env.dicom_peer)
DICOM_WORKLIST_POLL = env.integer(
    "DICOM_WORKLIST_POLL", 60, "Seconds between two polls of DICOM_WORKLIST.", minimum=5)
DICOM_STABLE_POLL = env.integer(
    "DICOM_STABLE_POLL", 0, "Seconds between C-FIND/QIDO polls of the PACS for changed studies "
    "(0: rely on instances our C-STORE SCP receives).", minimum=0)

# --- Imaging Document Consumer (consumer/, manage.py xds_fetch) --------------------------
XDS_CONSUMER_REGISTRY_URL = env.url(
    "XDS_CONSUMER_REGISTRY_URL", "",
    "Registry the consumer queries (ITI-18); --registry overrides. Empty: the registry in this server, called "
    "in process.")


def _format_codes(value: str) -> list[str]:
    """Comma-separated ``code^^scheme`` (the stored-query form, ITI TF-2a 3.18.4.1.2.3.7.1)."""
    codes = [item.strip() for item in value.split(",") if item.strip()]
    for code in codes:
        name, sep, scheme = code.partition("^^")
        if not (sep and name and scheme) or "'" in code:
            raise ValueError(f"{code!r} is not code^^scheme")
    if not codes:
        raise ValueError("at least one code^^scheme is needed (xds_fetch --any-format asks without)")
    return codes


XDS_CONSUMER_KOS_FORMAT_CODES = env.custom(
    "XDS_CONSUMER_KOS_FORMAT_CODES", "1.2.840.10008.5.1.4.1.1.88.59^^1.2.840.10008.2.6.1",
    "Comma-separated code^^scheme formatCodes of the affinity domain's imaging manifests (KOS), sent as "
    "$XDSDocumentEntryFormatCode (--any-format: none).", _format_codes)

XDS_SITE_CONSUMER_IDENTITY = env.custom(
    "XDS_SITE_CONSUMER_IDENTITY", "XDSI_CONSUMER@LOCAL",
    "This site's Imaging Document Consumer identity (DICOM LO, at most 64 characters), unique in the affinity "
    "domain: a PACS import writes it as Modifying System (0400,0563) of the Original Attributes Sequence item it "
    "adds (import reconciliation, PS3.3 C.12.1.1.9), and this site's Imaging Document Source does not publish "
    "a study whose instances carry an item naming it (an imported study is not published again).",
    env.dicom_lo)

# --- Predictive prefetch (consumer/prefetch.py) ------------------------------------------
XDS_PREFETCH = env.boolean(
    "XDS_PREFETCH", False, "Predictive prefetch: when an MPPS IN PROGRESS reaches this site's DICOM listener, "
    "import the patient's relevant priors held by other sites into DICOM_PACS in the background (job queue).")
XDS_PREFETCH_LOOKBACK_DAYS = env.integer(
    "XDS_PREFETCH_LOOKBACK_DAYS", 1825, "Prefetch only priors whose study began at most this many days ago.",
    minimum=1)
XDS_PREFETCH_MAX_STUDIES = env.integer(
    "XDS_PREFETCH_MAX_STUDIES", 3, "Prefetch at most this many priors (the most recent) per procedure.",
    minimum=1, maximum=100)
XDS_PREFETCH_MATCH = env.choice(
    "XDS_PREFETCH_MATCH", "modality-or-anatomy", "Which priors are relevant: modality-or-anatomy (same modality "
    "or same body part, from the manifest's eventCodeList), modality, anatomy, or any.",
    ("modality-or-anatomy", "modality", "anatomy", "any"))

# --- Web portal (portal/) -----------------------------------------------------------------
XDS_SITE_KEY = env.custom(
    "XDS_SITE_KEY", "local", "This node's site key (lower-case letters, digits, '-'): the hospital a portal user "
    "must belong to to import into this site's PACS or to operate its imaging source.", env.site_key)
XDS_SITE_NAME = env.string("XDS_SITE_NAME", "XDS-I.b node", "This node's name, shown on the portal's pages.")
XDS_PORTAL_PEERS = env.custom(
    "XDS_PORTAL_PEERS", "", "The affinity domain's other nodes the portal's front page shows (their /healthz), "
    "comma-separated Name=http://host:port.", env.named_urls)
XDS_PORTAL_ZIP_CONCURRENCY = env.integer(
    "XDS_PORTAL_ZIP_CONCURRENCY", 2, "Zip downloads of studies served at once by this node (more wait for a "
    "503 Retry-After).", minimum=1, maximum=64)
XDS_AFFINITY_DOMAIN_AUTHORITY = env.oid(
    "XDS_AFFINITY_DOMAIN_AUTHORITY", "1.3.6.1.4.1.21367.2005.13.20.1000",
    "The affinity domain's patient id assigning authority (CX.4 OID): a bare id typed in the portal's patient "
    "search becomes id^^^&<this>&ISO. Default: the NIST/IHE demo affinity domain.")
XDS_PORTAL_JOURNAL = env.boolean(
    "XDS_PORTAL_JOURNAL", True, "Keep the transactions journal the portal's front page shows (var/journal/"
    "transactions.jsonl, one JSON line per audited transaction, no patient data, rotated at ~1 MB). Not "
    "installed under pytest.")
DEMO_PASSWORD = env.string(
    "DEMO_PASSWORD", "", "`make run`: the demo portal users' password (empty: one is generated and printed "
    "once, when the users are created).")

# --- Secure node (ATNA, issue 13): TLS (ITI-19) and node identities (atna/) -------------------
XDS_TLS = env.choice(
    "XDS_TLS", "off", "TLS on every listener and client (ITI-19, TLS 1.2 floor, mutual authentication): off "
    "(plain TCP, local development only; a warning is logged), on (XDS_TLS_CERT/KEY and XDS_TLS_CA and/or "
    "XDS_TLS_PINNED required), demo (`make run` creates a demo PKI under XDS_PKI_DIR and uses it).",
    ("off", "on", "demo"))
XDS_PKI_DIR = Path(env.string("XDS_PKI_DIR", str(VAR_DIR / "pki"),
                              "XDS_TLS=demo: where the demo PKI (CA, node and role certificates) is kept."))
XDS_TLS_CERT = env.string("XDS_TLS_CERT", "", "This node's certificate (PEM, with its chain).")
XDS_TLS_KEY = env.string("XDS_TLS_KEY", "", "This node's private key (PEM, unencrypted; keep it 0600).")
XDS_TLS_CA = env.csv("XDS_TLS_CA", "", "CA certificates (PEM or DER files, comma-separated) a peer's certificate "
                     "may chain to.")
XDS_TLS_PINNED = env.csv("XDS_TLS_PINNED", "", "Certificates (files or directories of .pem/.crt/.der/.cer, "
                         "comma-separated) a peer may present as they are, self-signed ones included.")
XDS_TLS_VERIFY_HOSTNAME = env.boolean(
    "XDS_TLS_VERIFY_HOSTNAME", False, "Outbound TLS checks the server certificate's DNS name against the host "
    "connected to (ITI-19 FQDN Validation of Server Certificate option).")

# --- Audit trail (ATNA, issue 13: atna/trail.py, atna/chain.py, atna/syslog_jobs.py) ----------------
XDS_AUDIT = env.boolean(
    "XDS_AUDIT", True, "Keep the ATNA audit trail: every audit event becomes a DICOM PS3.15 A.5 message stored in "
    "the database (written before the answer goes out), HMAC-chained by the job worker, anchored to a file and "
    "shipped to XDS_AUDIT_SYSLOG. Not installed under pytest.")
XDS_AUDIT_SOURCE_ID = env.string(
    "XDS_AUDIT_SOURCE_ID", "", "AuditSourceID of this node's audit messages (PS3.15 A.5.1; empty: "
    "<XDS_SITE_KEY>@<hostname>).")
XDS_AUDIT_ENTERPRISE_SITE_ID = env.string(
    "XDS_AUDIT_ENTERPRISE_SITE_ID", "", "AuditEnterpriseSiteID of this node's audit messages (the hospital; "
    "empty: none).")
XDS_AUDIT_KEY_FILE = Path(env.string(
    "XDS_AUDIT_KEY_FILE", str(VAR_DIR / "audit" / "hmac.key"), "The audit chain's HMAC key, kept outside the "
    "database (created 0600 by the first chaining; back it up: without it `xds_audit verify` cannot pass)."))
XDS_AUDIT_ANCHOR_FILE = Path(env.string(
    "XDS_AUDIT_ANCHOR_FILE", str(VAR_DIR / "audit" / "anchors.log"), "Append-only file the audit chain's head is "
    "anchored to (seq, HMAC, time); `xds_audit verify` finds truncated records with it. Keep it off the "
    "database's disk."))
XDS_AUDIT_CHAIN_INTERVAL = env.integer(
    "XDS_AUDIT_CHAIN_INTERVAL", 5, "Seconds between runs of the audit chainer and the syslog shipper (jobs of "
    "the job worker).", minimum=1, maximum=3600)
XDS_AUDIT_ANCHOR_INTERVAL = env.integer(
    "XDS_AUDIT_ANCHOR_INTERVAL", 60, "Seconds between anchors of the audit chain's head (when it moved).",
    minimum=1)
XDS_AUDIT_SYSLOG = env.string(
    "XDS_AUDIT_SYSLOG", "", "Audit Record Repository (ITI-20): tls://host:6514 (RFC 5425, mutual TLS with this "
    "node's certificate), udp://host:514 (RFC 5426), tcp://host:port (plain, development); empty: not shipped.")
XDS_AUDIT_RETENTION_DAYS = env.integer(
    "XDS_AUDIT_RETENTION_DAYS", 2190, "Days audit records are kept (default six years); a daily job deletes "
    "older ones and anchors where the kept chain starts.", minimum=1)

# --- DICOM TLS (issue 13, helper C): which DICOM peers speak TLS (imaging_source/dicom/config.py PeerTls) ----
DICOM_PACS_TLS = env.choice(
    "DICOM_PACS_TLS", "node", "Whether DICOM_PACS speaks DICOM TLS (PS3.15 B.10; our associations to it present "
    "XDS_TLS_CERT): node (as XDS_TLS), on, off (a PACS on a secured segment that cannot do TLS). An https "
    "DICOMWEB_URL is always called with this node's certificate.", ("node", "on", "off"))
DICOM_WORKLIST_TLS = env.choice(
    "DICOM_WORKLIST_TLS", "node", "Whether DICOM_WORKLIST speaks DICOM TLS: node (as XDS_TLS), on, off.",
    ("node", "on", "off"))

# --- `make run` supervisor (config/supervisor.py) ------------------------------------
XDS_DEMO = env.boolean(
    "XDS_DEMO", True, "`make run` starts the two-hospital demo affinity domain (domain registry + repository, "
    "Hospital A and B each with its own imaging source, DICOM listener, job worker and Orthanc) with demo "
    "data. false: one empty node with every actor on PORT.")
HOSPITAL_A_HTTP_PORT = env.integer("HOSPITAL_A_HTTP_PORT", 8001, "Demo: Hospital A's HTTP port (RAD-69 endpoint).",
                                   minimum=1, maximum=65535)
HOSPITAL_A_DICOM_PORT = env.integer("HOSPITAL_A_DICOM_PORT", 11112, "Demo: Hospital A's DICOM listener port.",
                                    minimum=1, maximum=65535)
HOSPITAL_A_PACS_DICOM_PORT = env.integer("HOSPITAL_A_PACS_DICOM_PORT", 4242, "Demo: Orthanc A's DICOM port.",
                                         minimum=1, maximum=65535)
HOSPITAL_A_PACS_HTTP_PORT = env.integer("HOSPITAL_A_PACS_HTTP_PORT", 8042, "Demo: Orthanc A's HTTP port "
                                        "(REST, DICOMweb).", minimum=1, maximum=65535)
HOSPITAL_B_HTTP_PORT = env.integer("HOSPITAL_B_HTTP_PORT", 8002, "Demo: Hospital B's HTTP port (RAD-69 endpoint).",
                                   minimum=1, maximum=65535)
HOSPITAL_B_DICOM_PORT = env.integer("HOSPITAL_B_DICOM_PORT", 11114, "Demo: Hospital B's DICOM listener port.",
                                    minimum=1, maximum=65535)
HOSPITAL_B_PACS_DICOM_PORT = env.integer("HOSPITAL_B_PACS_DICOM_PORT", 4244, "Demo: Orthanc B's DICOM port.",
                                         minimum=1, maximum=65535)
HOSPITAL_B_PACS_HTTP_PORT = env.integer("HOSPITAL_B_PACS_HTTP_PORT", 8044, "Demo: Orthanc B's HTTP port "
                                        "(REST, DICOMweb).", minimum=1, maximum=65535)
XDS_RUN_PACS = env.boolean("XDS_RUN_PACS", True, "Single node (XDS_DEMO=false): `make run` starts the local "
                            "Orthanc PACS.")
XDS_RUN_HL7 = env.boolean("XDS_RUN_HL7", True, "Single node: `make run` starts the ITI-8 MLLP listener.")
XDS_RUN_DICOM = env.boolean("XDS_RUN_DICOM", True, "Single node: `make run` starts the DICOM listener (C-STORE + "
                            "MPPS SCP).")
XDS_RUN_JOBS = env.boolean(
    "XDS_RUN_JOBS", True, "`make run` starts the job worker (manage.py xds_jobs_worker): MPPS and stable-study "
    "publication, and every other queued task.")

# --- Job queue (jobs/, manage.py xds_jobs_worker) ------------------------------------------
XDS_JOBS_POLL_INTERVAL = env.integer(
    "XDS_JOBS_POLL_INTERVAL", 2, "Seconds the job worker waits before looking again when no job is due.", minimum=1)
XDS_JOBS_MAX_ATTEMPTS = env.integer(
    "XDS_JOBS_MAX_ATTEMPTS", 8, "Attempts of a queued job (e.g. a study publication) before it is dead (admin: "
    "retry now).", minimum=1)
XDS_JOBS_LEASE = env.integer(
    "XDS_JOBS_LEASE", 900, "Seconds a worker owns the job it runs; a job still running after that (its worker "
    "died) is run again. Keep it longer than any job.", minimum=10)
XDS_JOBS_BACKOFF_BASE = env.integer(
    "XDS_JOBS_BACKOFF_BASE", 30, "Seconds before the first retry of a failed job; doubled per attempt, with "
    "jitter, up to XDS_JOBS_BACKOFF_CAP.", minimum=1)
XDS_JOBS_BACKOFF_CAP = env.integer(
    "XDS_JOBS_BACKOFF_CAP", 3600, "Longest wait (seconds) before a retry of a failed job.", minimum=1)

# --- Conformance runner (manage.py xds_conformance) ---------------------------------------
XDS_CONFORMANCE_MANIFEST = env.string(
    "XDS_CONFORMANCE_MANIFEST", str(BASE_DIR / "conformance" / "corpus" / "manifest.yaml"),
    "Default replay manifest of `manage.py xds_conformance` (--manifest overrides).")
XDS_CONFORMANCE_CODES = env.string(
    "XDS_CONFORMANCE_CODES", "", "codes.xml the conformance corpus' codes are rewritten for (--codes overrides; "
    "empty: no rewrite).")

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
    # The job queue (jobs/): the actors enqueue, `manage.py xds_jobs_worker` runs.
    "jobs",
    # The conformance harness (manage.py xds_conformance); it imports no actor.
    "conformance",
    # The Imaging Document Consumer (consumer/): ITI-18, ITI-43, RAD-69 as a client.
    "consumer",
    # The two-hospital demo affinity domain `make run` starts (demo/: sites, demo data).
    "demo",
    # The web portal (portal/): the clinician's and operator's pages, above the actors.
    "portal",
    # The ATNA secure node (atna/): node identity table, TLS settings, the audit trail.
    "atna",
    # xds_core (the protocol stack) and kos (KOS manifests) are plain libraries, not Django apps.
]

MIDDLEWARE = [
    # First, so that every middleware below counts: the portal's pages carry Server-Timing (its benchmark reads it).
    "portal.middleware.ServerTimingMiddleware",
    # Issue 13 (secure node): under XDS_TLS, a request whose client certificate maps to no node identity is
    # refused before anything else runs (static files, sessions, views); removes itself when XDS_TLS=off.
    "atna.middleware.NodeIdentityMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin's CSS) from STATIC_ROOT, which `make run` fills with collectstatic.
    "whitenoise.middleware.WhiteNoiseMiddleware",
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
                "portal.access.site",
            ],
        },
    },
]

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    # Repository documents: content-addressed files (xds_repository.storage).  Point
    # BACKEND at any Django storage (e.g. an object store) to move them.
    "xds_documents": {
        "BACKEND": "xds_repository.storage.ContentAddressedStorage",
        "OPTIONS": {"location": XDS_DOCUMENT_DIR},
    },
}

LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:home"
LOGOUT_REDIRECT_URL = "portal:login"
# Several nodes share one host name on one machine (the demo: 127.0.0.1:8000/8001/8002) and cookies do not
# tell ports apart: each node's session and CSRF cookies carry its port, so logging in to one does not log
# the browser out of another.
SESSION_COOKIE_NAME = f"xds_session_{PORT}"
CSRF_COOKIE_NAME = f"xds_csrf_{PORT}"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 8 * 3600  # a working day
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
# Forms (admin, portal): a body past this is refused with 400 before it is read (Django checks the
# Content-Length). The SOAP endpoints read wsgi.input with their own streaming parser and never touch
# request.body/POST, so their own limits (XDS_MAX_REQUEST_SIZE ...) apply to them instead.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.size(
    "DATA_UPLOAD_MAX_MEMORY_SIZE", "2621440", "Largest non-file form body (admin, portal) Django reads "
    "into memory (Django's default, 2.5 MB); beyond: 400. Not applied to the SOAP endpoints.")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Tracebacks' exception messages are redacted (UIDs, patient ids, query strings: xds_core/log_ref.py).
    "formatters": {"plain": {"()": "xds_core.log_ref.RedactingFormatter",
                             "format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # pydicom logs a value it cannot parse at WARNING, quoting the value, and in a garbled header that can be
    # a patient's name or id: operational logs carry no patient data, so only its errors are kept.
    # psycopg_pool logs every failed connection attempt (several a second per process, two lines each) while
    # the database is away: the job worker logs an outage once when it begins and once when it ends, and a
    # request that fails logs its own line.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "pydicom": {"level": "ERROR"},
                "psycopg.pool": {"level": "ERROR"}},
}
