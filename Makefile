# XDS-I.b suite — one-command entry points.  `make run` and `make test` are what a new user types.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PORT ?= 8000
PACS := imaging_source/pacs/local-pacs.sh
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help run test test-pg test-sqlite lint bench bench-ab bench-registry bench-repository bench-imaging bench-consumer bench-portal \
        conformance pacs-start pacs-stop pacs-load system-deps venv migrate clean

help:
	@echo "make run     set everything up and start the two-hospital demo affinity domain (XDS_DEMO=false: one node on :$(PORT);"
	@echo "             XDS_TLS=demo: every listener over mutual TLS with a demo PKI under var/pki, see SECURITY.md)"
	@echo "make test    run the whole test suite (starts a local Orthanc PACS for the DICOM tests)"
	@echo "make bench   run the registry/repository/imaging benchmarks against 'XDS_DEMO=false make run'"
	@echo "make bench-ab BASE=rev  interleaved A/B benchmark of two commits"
	@echo "make bench-consumer  Hospital B's consumer vs direct DICOMweb copies, WAN, 2 GB study (needs 'make run')"
	@echo "make bench-portal  Hospital B's portal: page server times, thumbnails, ITI-18 under load (needs 'make run', DEMO_PASSWORD)"
	@echo "make lint    ruff + import rules"
	@echo "make conformance  replay the NIST conformance corpus against 'XDS_DEMO=false make run'"

# --- setup ----------------------------------------------------------------------------
$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# Debian packages: Orthanc + DICOMweb plugin + dcmtk (the local PACS and an independent DICOM peer),
# chromium + chromium-driver (the portal's browser tests) and npm (axe-core for their accessibility checks);
# socat (the Orthancs' HTTPS front under XDS_TLS, imaging_source/pacs/local-pacs.sh) and openssl (the TLS tests'
# s_client probes).
system-deps:
	@if ! command -v Orthanc >/dev/null || ! command -v storescu >/dev/null \
	    || [ ! -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || [ ! -x /usr/bin/chromium ] \
	    || [ ! -x /usr/bin/chromedriver ] || ! command -v npm >/dev/null || ! command -v socat >/dev/null \
	    || ! command -v openssl >/dev/null; then \
	  echo "installing orthanc, orthanc-dicomweb, dcmtk, socat, openssl, chromium, chromium-driver, npm (apt)"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) \
	    apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb dcmtk curl socat openssl chromium \
	    chromium-driver $$(command -v npm >/dev/null || echo npm) >/dev/null; \
	fi

# axe-core (package.json, exact pin; package-lock.json) for the browser tests' accessibility checks.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

migrate: $(STAMP)
	$(PY) manage.py migrate --noinput -v 0

# --- run ------------------------------------------------------------------------------
run: $(STAMP) system-deps
	$(PY) manage.py collectstatic --noinput -v 0
	PORT=$(PORT) $(PY) -m config.supervisor

# --- test -----------------------------------------------------------------------------
test: $(STAMP) system-deps node_modules/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

test-sqlite: test

test-pg: $(STAMP) system-deps node_modules/.installed
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/xdsi} $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# --- benchmarks (against the server `make run` starts; see README) ----------------------
BENCH_URL ?= http://127.0.0.1:$(PORT)
bench: bench-registry bench-repository bench-imaging

bench-registry: $(STAMP)
	$(PY) manage.py xds_bench_registry --url $(BENCH_URL) $(BENCH_ARGS)

bench-repository: $(STAMP)
	$(PY) manage.py xds_bench_repository --url $(BENCH_URL) $(BENCH_ARGS)

bench-imaging: $(STAMP)
	$(PY) manage.py xds_bench_kos
	$(PY) manage.py xds_bench_imaging --url $(BENCH_URL) $(BENCH_ARGS)

# As Hospital B of the demo affinity domain `make run` starts -> var/bench/consumer.json
bench-consumer: $(STAMP)
	XDS_ENV_FILE=var/demo/hospital-b.env $(PY) manage.py xds_bench_consumer $(BENCH_ARGS)

# Hospital B's portal in the demo affinity domain `make run` starts (DEMO_PASSWORD as at first start) -> var/bench/portal.json
bench-portal: $(STAMP)
	XDS_ENV_FILE=var/demo/hospital-b.env $(PY) manage.py xds_bench_portal $(BENCH_ARGS)

# Interleaved A/B of two commits on this machine (hot-path changes): make bench-ab BASE=<rev> [HEAD=<rev>] [PAIRS=5]
bench-ab: $(STAMP) system-deps
	@test -n "$(BASE)" || { echo "usage: make bench-ab BASE=<rev> [HEAD=<rev>] [PAIRS=5]"; exit 2; }
	$(PY) scripts/bench_ab.py --base $(BASE) --head $${HEAD:-HEAD} --pairs $${PAIRS:-5} $(BENCH_ARGS)

conformance: $(STAMP)
	$(PY) manage.py xds_conformance --registry $(BENCH_URL)/xds/registry \
	  --repository $(BENCH_URL)/xds/repository --imaging-source $(BENCH_URL)/xds/imaging-source \
	  --feed-hl7 127.0.0.1:$${HL7_PORT:-2575} --junit var/conformance.xml $(CONFORMANCE_ARGS)

# --- local PACS -----------------------------------------------------------------------
pacs-start: system-deps
	bash $(PACS) start
pacs-load: $(STAMP)
	PYTHON=$(PY) bash $(PACS) load
pacs-stop:
	bash $(PACS) stop

clean:
	rm -rf $(VENV) var .pytest_cache node_modules
