"""The replay driver: runs the manifest's steps in order and turns them into case verdicts.

Loop (conformance README §7): feed patients -> for every step of the selected
cases, in manifest order: resolve bindings, build the request, send it, judge
the answer, record exports and the request/response for later ``from:``
lookups and section-log assertions.

Why one module of ~750 lines: :class:`Runner` holds the run's state (patients, the id maps each
step allocates, the recorded exchanges that later steps bind to) and every step reads and writes
it; the pieces that need no run state already live apart (manifest, transforms, expectations,
codes, transport, testplan).  Splitting the class would pass that state around, not simplify it.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from lxml import etree

from conformance import dicom_checks, expectations, schema, transforms
from conformance.codes import AffinityCodes, CodeRewriter, is_skipped_query
from conformance.manifest import REPOSITORY_UNIQUE_ID_KEY, TRANSACTION_ENDPOINTS, Case, Manifest, Step
from conformance.patients import PatientPool
from conformance.testplan import UnsupportedError, testkit_binding
from conformance.transport import (
    Attachment,
    Exchange,
    Transport,
    TransportFailure,
    query_request,
    retrieve_request,
)
from conformance.xmlutil import XmlError, children, descendants, parse
from xds_core.vocabulary import ClassificationScheme, IdentificationScheme, StoredQuery

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
DEFAULT_SOURCE_ID = "1.3.6.1.4.1.21367.13.80.999"
DEFAULT_HOME_COMMUNITY_ID = "urn:oid:1.3.6.1.4.1.21367.13.70.200"
#: The Imaging Document Source repositoryUniqueId the corpus' RAD-69 requests and reference KOS
#: (RetrieveLocationUID) assume (corpus README §6); ``--imaging-source-unique-id`` replaces it.
NIST_IMAGING_SOURCE_UNIQUE_ID = "1.3.6.1.4.1.21367.13.80.110"
SUBMISSIONS = ("ITI-42", "ITI-41", "RAD-68")
QUERIES = ("ITI-18", "ITI-51")


class StepError(Exception):
    """The step cannot be prepared (unresolved binding, unreadable file, ...): it fails with this reason."""


@dataclass
class Config:
    endpoints: dict[str, str]            # registry / repository / imaging-source -> URL ('' = not given)
    feed_configured: bool
    source_id: str = DEFAULT_SOURCE_ID
    home_community_id: str = DEFAULT_HOME_COMMUNITY_ID
    timeout: float = 120.0
    validate_schema: bool = True
    codes: AffinityCodes | None = None   # --codes: rewrite the corpus' codes for this affinity domain
    #: --repository-unique-id: the Document Repository's repositoryUniqueId ('' = discover it from the
    #: registry's metadata of a document this run provided to that repository).
    repository_unique_id: str = ""
    #: --imaging-source-unique-id: the Imaging Document Source's repositoryUniqueId (RAD-69 routing,
    #: the KOS RetrieveLocationUID).
    imaging_source_unique_id: str = NIST_IMAGING_SOURCE_UNIQUE_ID


@dataclass
class StepRecord:
    step: Step
    verdict: str = PASS
    reasons: list[str] = field(default_factory=list)
    request: etree._Element | None = None
    exchange: Exchange | None = None
    exports: dict[str, str] = field(default_factory=dict)
    patient: str | None = None
    seconds: float = 0.0

    @property
    def response(self) -> etree._Element | None:
        return self.exchange.body if self.exchange is not None else None

    def fail(self, reason: str) -> None:
        self.verdict = FAIL
        self.reasons.append(reason)


@dataclass
class CaseResult:
    case: Case
    verdict: str
    reason: str
    steps: list[StepRecord] = field(default_factory=list)
    dependency_of: list[str] = field(default_factory=list)
    seconds: float = 0.0


class _Oids:
    """Fresh OIDs for uniqueIds: 2.25.<UUID as integer> (ISO/IEC 9834-8), unique without coordination."""

    def __call__(self) -> str:
        return f"2.25.{uuid.uuid4().int}"


class Runner:
    def __init__(self, manifest: Manifest, config: Config, pool: PatientPool, *,
                 progress: TextIO | None = None, transport: Transport | None = None) -> None:
        self.manifest = manifest
        self.config = config
        self.pool = pool
        self.progress = progress or sys.stderr
        self.transport = transport or Transport(config.endpoints, timeout=config.timeout)
        self.records: dict[str, StepRecord] = {}
        self.new_oid: Callable[[], str] = _Oids()
        self.submitted_unique_ids: set[str] = set()
        self.provided_unique_ids: set[str] = set()   # DocumentEntry uniqueIds sent to the repository (ITI-41/RAD-68)
        self.discovered_repository_unique_id: str = ""
        self._schema_validate = schema.validate if config.validate_schema else None
        self.codes: CodeRewriter | None = None
        if config.codes is not None:
            self.codes = CodeRewriter(config.codes)
            self.codes.plan(self._coded_files())
        # XDS-I submissions whose file is also a sameKOSMetadata reference (IMG-01 / IMG-03): the
        # attributes that check compares never change (its formatCode is in the NIST codes.xml anyway).
        self._reference_bodies = {
            str(a.get("reference")) for s in manifest.steps.values() if s.transaction == "CHECK-IDS-OUTPUT"
            for a in s.expect.get("assertions") or [] if a.get("process") == "sameKOSMetadata"}

    def _coded_files(self) -> list[tuple[Path, str]]:
        """Every request body of the manifest that may carry codes, in manifest order."""
        files: list[tuple[Path, str]] = []
        for scenario in self.manifest.scenarios:
            for step in scenario.steps:
                body = step.request.get("body")
                if body and step.transaction in SUBMISSIONS + QUERIES:
                    files.append((self.manifest.file(str(body)),
                                  "metadata" if step.transaction in SUBMISSIONS else "query"))
        return files

    def code_mappings(self) -> list[str]:
        """``attribute: old -> new`` for every code the run rewrote (empty without --codes)."""
        return self.codes.report() if self.codes is not None else []

    # --- case selection ------------------------------------------------------------

    def skip_reason(self, case: Case) -> str | None:
        if case.blocked or all(self.manifest.scenario_of[s].blocked for s in case.step_ids):
            titles = dict.fromkeys(self.manifest.scenario_of[s].title for s in case.step_ids)
            return f"blocked in the manifest ({case.transaction}): {'; '.join(titles)}"
        unsupported = [f"{s}: {', '.join(found)}" for s in case.step_ids if (found := self.manifest.unsupported(s))]
        if unsupported:
            return "unsupported by this runner: " + "; ".join(unsupported)
        needed: list[str] = []
        for step_id in case.step_ids:
            step = self.manifest.steps[step_id]
            for endpoint in self._endpoints_of(step):
                if endpoint not in needed:
                    needed.append(endpoint)
        missing = [e for e in needed if e != "feed" and not self.config.endpoints.get(e)]
        if missing:
            return "needs " + ", ".join(f"--{e}" for e in missing)
        if "feed" in needed and not self.config.feed_configured:
            return "needs --feed-hl7 or --feed-cmd (patient identity feed)"
        return None

    def _endpoints_of(self, step: Step) -> tuple[str, ...]:
        endpoints = TRANSACTION_ENDPOINTS.get(step.transaction, ())
        if step.transaction == "CHECK-RAD69-RESPONSE":
            for assertion in step.expect.get("assertions") or []:
                source = self.manifest.steps.get(str(assertion.get("response_of")))
                if source is not None:
                    endpoints = endpoints + TRANSACTION_ENDPOINTS.get(source.transaction, ())
        return endpoints

    # --- the run -------------------------------------------------------------------------

    def run(self, selected: list[Case]) -> list[CaseResult]:
        cases = self.manifest.with_dependencies(selected)
        selected_ids = {c.id for c in selected}
        dependents: dict[str, list[str]] = {}
        for case in cases:
            if case.id in selected_ids:
                continue
            dependents[case.id] = [s.id for s in selected if case in self.manifest.with_dependencies([s])]
        skipped = {c.id: reason for c in cases if (reason := self.skip_reason(c))}
        self._skip_dependents(cases, skipped)
        to_run = {s for c in cases if c.id not in skipped for s in c.step_ids}
        order = [s.id for sc in self.manifest.scenarios for s in sc.steps if s.id in to_run]
        started = time.monotonic()
        for n, step_id in enumerate(order, 1):
            step = self.manifest.steps[step_id]
            record = self.run_step(step)
            self._progress(f"[{n}/{len(order)}] {record.verdict} {step_id} ({record.seconds:.2f}s)"
                           + (f": {record.reasons[0]}" if record.reasons else ""))
        self._progress(f"ran {len(order)} steps in {time.monotonic() - started:.1f}s")
        results: list[CaseResult] = []
        for case in cases:
            if case.id in skipped:
                result = CaseResult(case, SKIP, skipped[case.id])
            else:
                result = self.verdict(case)
            result.dependency_of = dependents.get(case.id, [])
            if result.dependency_of:
                result.reason = (result.reason + " " if result.reason else "") + \
                    f"(run as a dependency of {', '.join(result.dependency_of)})"
            results.append(result)
        return results

    def _skip_dependents(self, cases: list[Case], skipped: dict[str, str]) -> None:
        """A case reading from a skipped case's step is skipped too, naming it (transitively)."""
        changed = True
        while changed:
            changed = False
            for case in cases:
                if case.id in skipped:
                    continue
                for step_id in case.step_ids:
                    owners = [o for dep in self.manifest.steps[step_id].dependencies()
                              if (o := self.manifest.case_of_step(dep)) is not None and o.id in skipped]
                    if owners:
                        skipped[case.id] = f"depends on {owners[0].id}, skipped ({skipped[owners[0].id]})"
                        changed = True
                        break

    def verdict(self, case: Case) -> CaseResult:
        records = [self.records[s] for s in case.step_ids if s in self.records]
        result = CaseResult(case, PASS, "", steps=records, seconds=sum(r.seconds for r in records))
        # 'mutually exclusive with <section>' (12379): a case passes when one alternative passes.
        alternatives: set[str] = set()
        for record in records:
            other = record.step.exclusive_with()
            if other:
                alternatives |= {record.step.section, other}
        plain = [r for r in records if r.step.section not in alternatives]
        failing = [r for r in plain if r.verdict == FAIL]
        if alternatives:
            groups = {a: [r for r in records if r.step.section == a] for a in sorted(alternatives)}
            passing = [a for a, rs in groups.items() if rs and all(r.verdict == PASS for r in rs)]
            if not passing:
                failing += [r for rs in groups.values() for r in rs if r.verdict == FAIL][:1]
            elif not failing:
                result.reason = f"alternative {passing[0]} passed"
        if failing:
            first_fail = failing[0]
            result.verdict = FAIL
            result.reason = f"{first_fail.step.id}: {'; '.join(first_fail.reasons)}"
        elif not result.reason:
            result.reason = f"{len(records)} steps passed"
        return result

    def _progress(self, line: str) -> None:
        print(line, file=self.progress, flush=True)

    # --- one step ------------------------------------------------------------------------

    def run_step(self, step: Step) -> StepRecord:
        record = StepRecord(step)
        self.records[step.id] = record
        started = time.monotonic()
        try:
            handler = {
                "PIF": self._pif, "SETUP": self._setup, "CHECK": self._check,
                "CHECK-RAD69-RESPONSE": self._check_rad69, "CHECK-IDS-OUTPUT": self._check_ids_output,
            }.get(step.transaction, self._transaction)
            handler(step, record)
        except StepError as exc:
            record.fail(str(exc))
        except TransportFailure as exc:
            record.fail(f"transport: {exc}")
        except Exception as exc:  # never crash on anything a vendor sends; keep the reason
            record.fail(f"runner error: {type(exc).__name__}: {exc}")
        record.seconds = time.monotonic() - started
        return record

    def _pif(self, step: Step, record: StepRecord) -> None:
        name = self.manifest.scenario_of[step.id].run_patient
        if not name:
            raise StepError("PIF step without a run patient")
        record.patient = self.pool.resolve(name)
        problem = self.pool.ensure_fed(name)
        record.exports["report.$patientid$"] = record.patient
        if problem:
            record.fail(f"feed of {record.patient}: {problem}")

    def _setup(self, step: Step, record: StepRecord) -> None:
        # 'allocate a fresh patient id that is NOT fed': the pool's P_NEW is exactly that.
        record.patient = self.pool.resolve("P_NEW")

    # --- bindings ------------------------------------------------------------------------

    def bindings(self, step: Step, record: StepRecord) -> dict[str, str]:
        """Symbol -> value for this step: run parameters, builtins, then the step's ``bind``."""
        now = datetime.now()
        scenario = self.manifest.scenario_of[step.id]
        values: dict[str, str] = {
            "$now$": now.strftime("%Y%m%d%H%M%S"),
            "$lastyear$": (now - timedelta(days=365)).strftime("%Y%m%d%H%M%S"),
            "$homeCommunityId$": self.config.home_community_id,
        }
        run_patient = step.patient.get("id") if step.patient.get("mode") == "assign" else scenario.run_patient
        if run_patient:
            values["$patientid$"] = self.pool.resolve(run_patient)
        if "P_ALT" in self.pool.definitions:
            values["$altpatientid$"] = self.pool.resolve("P_ALT")
        for symbol, binding in step.bind.items():
            values[symbol] = self._resolve(step, record, symbol, binding)
        return values

    def _resolve(self, step: Step, record: StepRecord, symbol: str, binding: dict[str, Any]) -> str:
        if "patient" in binding:
            return self.pool.resolve(str(binding["patient"]))
        if "builtin" in binding:
            now = datetime.now()
            builtin = str(binding["builtin"])
            if builtin == "now":
                return now.strftime("%Y%m%d%H%M%S")
            if builtin == "lastyear":
                return (now - timedelta(days=365)).strftime("%Y%m%d%H%M%S")
            if builtin in ("DATE", "date"):
                return now.strftime("%Y%m%d")
            raise StepError(f"binding {symbol}: unknown builtin {builtin!r}")
        if "generate" in binding:
            kind = str(binding["generate"])
            value = f"urn:uuid:{uuid.uuid4()}" if kind == "urn:uuid" else self.new_oid()
            record.exports[f"generated.{symbol}"] = value
            return value
        if "config" in binding:
            return self._config_value(symbol, str(binding["config"]))
        source_id, key = str(binding["from"]), str(binding.get("key", ""))
        source = self.records.get(source_id)
        if source is None:
            raise StepError(f"binding {symbol}: step {source_id} was not run")
        if "xpath" in binding:
            return self._use_xpath(symbol, source, str(binding["xpath"]))
        if key == REPOSITORY_UNIQUE_ID_KEY:
            return self._use_repository_unique_id(symbol, source)
        if key.startswith("patient."):
            if source.patient:
                return source.patient
            raise StepError(f"binding {symbol}: step {source_id} assigned no patient")
        if key not in source.exports:
            state = "failed" if source.verdict == FAIL else "passed"
            raise StepError(f"binding {symbol}: step {source_id} ({state}) did not produce {key}")
        return source.exports[key]

    def _config_value(self, symbol: str, key: str) -> str:
        """``{config: X}``: a run parameter or the systems under test's own configuration."""
        if key == "homeCommunityId":
            return self.config.home_community_id
        if key == "sourceId":
            return self.config.source_id
        if key == "imagingSourceUniqueId":
            return self.config.imaging_source_unique_id
        if key == "repositoryUniqueId":
            value = self.config.repository_unique_id or self.discovered_repository_unique_id
            if not value:
                raise StepError(f"binding {symbol}: the repository's repositoryUniqueId is unknown: give "
                                "--repository-unique-id (none discovered yet from a document this run provided)")
            return value
        raise StepError(f"binding {symbol}: unknown config value {key!r}")

    @staticmethod
    def _use_repository_unique_id(symbol: str, source: StepRecord) -> str:
        """The toolkit's ``UseRepositoryUniqueId``: the one repositoryUniqueId of that step's query result."""
        found = {expectations.slot_values(eo).get("repositoryUniqueId", [""])[0].strip()
                 for eo in (descendants(source.response, "ExtrinsicObject") if source.response is not None else [])}
        if "" in found or len(found) != 1:
            raise StepError(f"binding {symbol}: the result of {source.step.id} holds "
                            + ("no DocumentEntry" if not found else "a DocumentEntry without repositoryUniqueId"
                               if "" in found else f"several repositoryUniqueIds {sorted(found)}"))
        return found.pop()

    def _use_xpath(self, symbol: str, source: StepRecord, xpath: str) -> str:
        """The toolkit's ``UseXPath`` (testdir form): string value of the XPath over that step's log entry."""
        log = expectations.log_document([(source.step.local_id, source.step.transaction, source.request,
                                          source.response)])
        value = expectations.xpath_string(log[0], xpath)
        if value is None:
            raise StepError(f"binding {symbol}: XPath matches nothing in the log of {source.step.id}")
        return value

    def _resolve_reference(self, step: Step, record: StepRecord, reference: Any) -> str:
        """A ``DocumentEntries`` UseId given as a reference (``{from, key}`` or testkit-shaped)."""
        try:
            binding = testkit_binding(reference, step.section)
            return self._resolve(step, record, str(reference.get("symbol") or "UseId"), binding)
        except (StepError, UnsupportedError) as exc:
            raise ValueError(str(exc)) from exc

    def _discover_repository_unique_id(self, body: etree._Element | None) -> None:
        """Remember the repositoryUniqueId the registry reports for a document this run provided to the
        repository under test: that is the repository's own id (used when --repository-unique-id is absent)."""
        if body is None or self.discovered_repository_unique_id or not self.provided_unique_ids:
            return
        for eo in descendants(body, "ExtrinsicObject"):
            if _unique_id(eo) in self.provided_unique_ids:
                value = expectations.slot_values(eo).get("repositoryUniqueId", [""])[0].strip()
                if value:
                    self.discovered_repository_unique_id = value
                    return

    # --- requests ------------------------------------------------------------------------

    def _load(self, relative: str) -> etree._Element:
        path = self.manifest.file(relative)
        try:
            return parse(path.read_bytes())
        except (OSError, XmlError) as exc:
            raise StepError(f"cannot read {relative}: {exc}") from exc

    def build_request(self, step: Step, record: StepRecord, values: dict[str, str]
                      ) -> tuple[etree._Element, list[Attachment]]:
        request_spec = step.request
        root = self._load(str(request_spec["body"]))
        transforms.substitute_tree(root, values)
        if step.transaction == "RAD-69" and self.config.imaging_source_unique_id != NIST_IMAGING_SOURCE_UNIQUE_ID:
            for element in descendants(root, "RepositoryUniqueId"):
                if (element.text or "").strip() == NIST_IMAGING_SOURCE_UNIQUE_ID:
                    element.text = self.config.imaging_source_unique_id
        if step.transaction not in SUBMISSIONS:
            if self.codes is not None and step.transaction in QUERIES and not is_skipped_query(
                    self.manifest.file(str(request_spec["body"]))):
                self.codes.rewrite_query(root)
            return root, []
        try:
            submission = transforms.to_rim30(root)
        except transforms.TransformError as exc:
            raise StepError(f"{request_spec['body']}: {exc}") from exc
        assign = step.assign
        patient_mode = step.patient.get("mode", "placeholder")
        if patient_mode == "assign":
            record.patient = self.pool.resolve(str(step.patient["id"]))
            transforms.assign_patient(submission, record.patient)
        else:
            record.patient = values.get("$patientid$")
            ids = transforms.patient_ids(submission)
            if ids and record.patient not in ids:
                record.patient = ids[0]
        for cx in transforms.patient_ids(submission):
            if self.pool.must_feed(cx):
                problem = self.pool.ensure_fed(cx)
                if problem:
                    raise StepError(f"patient {cx} could not be fed: {problem}")
        uids: dict[str, str] = {}
        if assign.get("uniqueIds", True):
            uids = transforms.allocate_unique_ids(
                submission, self.new_oid, exclude_objects=assign.get("uniqueIdExcludeObjects") or [],
                exclude_schemes=assign.get("uniqueIdExcludeSchemes") or [])
        else:
            uids = transforms.allocate_unique_ids(submission, self.new_oid, exclude_objects=(), exclude_schemes=(
                transforms.UNIQUE_ID_SCHEMES))
        if assign.get("sourceId", True):
            transforms.set_source_id(submission, self.config.source_id)
        documents = [(self._document_id(d, values), d) for d in request_spec.get("documents") or []]
        document_ids = [d for d, _ in documents]
        uuids: dict[str, str] = {}
        if assign.get("uuids", False):
            uuids = transforms.assign_uuids(submission, document_ids)
        transforms.complete_ids(submission)
        if self.codes is not None:
            keep = (ClassificationScheme.DocumentEntry_formatCode.value,) \
                if str(request_spec["body"]) in self._reference_bodies else ()
            self.codes.rewrite_metadata(submission, keep=keep)
        for obj, uid in uids.items():
            record.exports[f"uid.{obj}"] = uid
            record.exports[f"report.{obj}_uid"] = uid
        for obj, new in uuids.items():
            record.exports[f"uuid.{obj}"] = new
            record.exports[f"report.{obj}_uuid"] = new
        self.submitted_unique_ids.update(uids.values())
        if step.transaction in ("ITI-41", "RAD-68"):
            self.provided_unique_ids.update(_identifier(eo, IdentificationScheme.DocumentEntry_uniqueId.value)
                                            for eo in descendants(submission, "ExtrinsicObject"))
        if step.transaction == "ITI-42":
            if documents:
                raise StepError("ITI-42 step with documents")
            return submission, []
        attachments: list[Attachment] = []
        pairs: list[tuple[str, str]] = []
        mime_by_id = {eo.get("id"): eo.get("mimeType") or "application/octet-stream"
                      for eo in descendants(submission, "ExtrinsicObject")}
        for n, (document_id, spec) in enumerate(zip(document_ids, (d for _, d in documents), strict=True), 1):
            content_id = f"doc{n}.{uuid.uuid4().hex}@xds-conformance"
            attachments.append(Attachment(content_id, mime_by_id.get(document_id, "application/octet-stream"),
                                          self.manifest.file(str(spec["file"]))))
            pairs.append((document_id, content_id))
        return transforms.provide_and_register(submission, pairs), attachments

    @staticmethod
    def _document_id(spec: dict[str, Any], values: dict[str, str]) -> str:
        document_id = str(spec["id"])
        if spec.get("idIsPlaceholder"):
            return transforms.substitute_string(document_id, values)
        return document_id

    # --- transactions --------------------------------------------------------------------

    def _transaction(self, step: Step, record: StepRecord) -> None:
        values = self.bindings(step, record)
        # waitBeforeMs separates this step's timestamps from its predecessors' (REG-31/32); when a
        # predecessor failed there is nothing to separate from, so don't make a broken run slower.
        if step.wait_before_ms and not any(
                self.records[d].verdict == FAIL for d in step.dependencies() if d in self.records):
            time.sleep(step.wait_before_ms / 1000)
        request, attachments = self.build_request(step, record, values)
        record.request = request
        self._reports(step, record, "InputMetadata")  # published even if the exchange fails
        exchange = self.transport.send(step.transaction, request, attachments)
        record.exchange = exchange
        if step.transaction in QUERIES:
            self._discover_repository_unique_id(exchange.body)
        self._reports(step, record, "Result")
        for problem in self.judge(step, record, values):
            record.fail(problem)

    def _reports(self, step: Step, record: StepRecord, origin: str) -> None:
        for name, spec in step.reports.items():
            if (spec.get("from") or "Result") != origin:
                continue
            source = record.request if origin == "InputMetadata" else record.response
            value = expectations.xpath_string(source, str(spec.get("xpath", "")))
            if value is not None:
                key = name if name.startswith("report.") else f"report.{name}"
                record.exports[key] = value

    def judge(self, step: Step, record: StepRecord, values: dict[str, str]) -> list[str]:
        expect = step.expect
        exchange = record.exchange
        assert exchange is not None
        problems: list[str] = []
        body = exchange.body
        status = expectations.response_status(body)
        errors = expectations.reported_errors(body)
        if exchange.fault is None:
            if body is None:
                return [f"HTTP {exchange.http_status}: no SOAP body"]
            problems += self._schema_problems(body)
        if expect.get("status"):
            problems += expectations.check_status([str(s) for s in expect["status"]], status, exchange.fault)
        if exchange.fault is not None:
            return problems
        if expect.get("errorMessageContains"):
            problems += expectations.check_error_message(str(expect["errorMessageContains"]), errors)
        if expect.get("errorCode"):
            problems += expectations.check_error_code(str(expect["errorCode"]), errors)
        if expect.get("contents"):
            problems += expectations.check_contents(
                expect["contents"], body, symbols=values,
                resolve=lambda reference: self._resolve_reference(step, record, reference))
        if expect.get("retrievedDocumentsEqual"):
            wanted = [(transforms.substitute_string(str(i["uid"]), values), self.manifest.file(str(i["file"])))
                      for i in expect["retrievedDocumentsEqual"]]
            problems += expectations.check_retrieved_equal(wanted, exchange.documents)
        if expect.get("compareWithQueryResultOf"):
            source = self.records.get(str(expect["compareWithQueryResultOf"]))
            problems += expectations.check_against_query(
                exchange.documents, source.response if source else None,
                expectations.requested_documents(record.request))
        problems += self._assertions(step, values)
        if problems and errors and not any("RegistryError" in p for p in problems):
            problems.append(f"the answer said: {expectations.describe_errors(errors)}")
        return problems

    def _schema_problems(self, body: etree._Element) -> list[str]:
        if self._schema_validate is None:
            return []
        try:
            found = self._schema_validate(_inline_binaries(body))
        except Exception as exc:  # a validator hiccup is reported, not fatal
            return [f"schema validation could not run: {exc}"]
        return [f"response is not schema-valid: {found[0]}" + (f" (+{len(found) - 1} more)" if len(found) > 1
                                                                else "")] if found else []

    def _assertions(self, step: Step, values: dict[str, str]) -> list[str]:
        xpath_assertions = [a for a in step.expect.get("assertions") or [] if "xpath" in a]
        if not xpath_assertions:
            return []
        entries = [(r.step.local_id, r.step.transaction, r.request, r.response)
                   for r in self.records.values() if r.step.section == step.section]
        document = expectations.log_document(entries)
        problems: list[str] = []
        for assertion in xpath_assertions:
            expression = str(assertion["xpath"])
            if self.codes is not None:
                expression = self.codes.rewrite_assertion(expression)
            problems += expectations.check_assertion(document, str(assertion.get("id")), expression, values)
        return problems

    # --- checks without a transaction ---------------------------------------------------

    def _check(self, step: Step, record: StepRecord) -> None:
        values = self.bindings(step, record)
        for problem in self._assertions(step, values):
            record.fail(problem)

    def _check_rad69(self, step: Step, record: StepRecord) -> None:
        for assertion in step.expect.get("assertions") or []:
            source = self.records.get(str(assertion.get("response_of")))
            if source is None or source.exchange is None:
                record.fail(f"{assertion.get('id')}: no response of {assertion.get('response_of')}")
                continue
            exchange = source.exchange
            process = assertion.get("process")
            if exchange.fault is not None:
                record.fail(f"{assertion.get('id')}: the retrieve answered a SOAP Fault: {exchange.fault}")
                continue
            status = expectations.response_status(exchange.body)
            if process == "sameRetImgs":
                problems = expectations.check_same_ret_imgs(source.request, exchange.documents, status)
            elif process == "sameDcmImgs":
                problems = self._same_dcm_imgs(assertion, exchange)
            elif process == "registryErrorListNotEmpty":
                problems = expectations.check_registry_error_list_not_empty(
                    status, expectations.reported_errors(exchange.body))
            else:
                problems = [f"unknown check process {process!r}"]
            for problem in problems:
                record.fail(f"{assertion.get('id')}: {problem}")

    def _same_dcm_imgs(self, assertion: dict[str, Any], exchange: Exchange) -> list[str]:
        references: dict[str, Path] = {}
        for folder in assertion.get("referenceImages") or []:
            path = self.manifest.root / "nist/_imagecache/std" / str(folder)
            if not path.is_dir():
                return [f"reference images {folder} missing from the corpus"]
            references.update(dicom_checks.reference_images(path))
        returned = [(d.document_unique_id, d.content) for d in exchange.documents if d.content is not None]
        problems = [f"{d.document_unique_id}: {d.problem}" for d in exchange.documents if d.content is None]
        return problems + dicom_checks.check_same_images(
            returned, references, [str(t) for t in assertion.get("dicomTags") or []])

    # --- IDS output (IMG-03) ---------------------------------------------------------------

    def _check_ids_output(self, step: Step, record: StepRecord) -> None:
        """What did the IDS send? Ask the registry for the patient's DICOM DocumentEntries (ITI-18)
        and fetch each KOS from the repository (ITI-43): an external runner sees only that."""
        values = self.bindings(step, record)
        for assertion in step.expect.get("assertions") or []:
            patient = str(assertion.get("submittedFor", ""))
            reference = self.manifest.file(str(assertion.get("reference", "")))
            process = assertion.get("process")
            record.patient = patient
            problem = self.pool.ensure_fed(patient)
            if problem:
                record.fail(f"patient {patient} could not be fed: {problem}")
                continue
            if process == "sameKOSDcm":
                problems = self._same_kos_dcm(record, patient, reference)
            elif process == "sameKOSMetadata":
                problems = self._same_kos_metadata(record, patient, reference, values.get("siuid", ""))
            else:
                problems = [f"unknown check process {process!r}"]
            for p in problems:
                record.fail(f"{assertion.get('id')}: {p}")

    def _find_dicom_entries(self, record: StepRecord, patient: str) -> list[etree._Element]:
        request = query_request(StoredQuery.FindDocuments.value, [
            ("$XDSDocumentEntryPatientId", [f"'{patient}'"]),
            ("$XDSDocumentEntryStatus", ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]),
        ])
        record.request = request
        exchange = self.transport.send("ITI-18", request)
        record.exchange = exchange
        if exchange.fault or exchange.body is None:
            raise StepError(f"FindDocuments for {patient}: {exchange.fault or 'no answer'}")
        status = expectations.response_status(exchange.body) or ""
        if not status.endswith("Success"):
            raise StepError(f"FindDocuments for {patient}: status {status} "
                            f"({expectations.describe_errors(expectations.reported_errors(exchange.body))})")
        return [eo for eo in descendants(exchange.body, "ExtrinsicObject") if eo.get("mimeType") == "application/dicom"]

    def _same_kos_dcm(self, record: StepRecord, patient: str, reference: Path) -> list[str]:
        reference_uid = dicom_checks.sop_instance_uid(reference.read_bytes())
        entries = self._find_dicom_entries(record, patient)
        # Entries this runner submitted itself (IMG-01) or carrying the reference's own
        # SOP Instance UID are not the IDS's output.
        candidates = [eo for eo in entries
                      if _unique_id(eo) not in self.submitted_unique_ids and _unique_id(eo) != reference_uid]
        if not candidates:
            return [f"no KOS DocumentEntry from the Imaging Document Source for {patient} "
                    f"({len(entries)} DICOM entries in the registry, none produced by the IDS)"]
        candidates.sort(key=lambda eo: expectations.slot_values(eo).get("creationTime", [""])[0], reverse=True)
        first_problems: list[str] | None = None
        for eo in candidates:
            repository = expectations.slot_values(eo).get("repositoryUniqueId", [""])[0]
            exchange = self.transport.send("ITI-43", retrieve_request([(repository, _unique_id(eo))]))
            docs = [d for d in exchange.documents if d.content is not None]
            if exchange.fault or not docs:
                problems = [f"retrieve of KOS {_unique_id(eo)} from {repository}: "
                            f"{exchange.fault or expectations.response_status(exchange.body)}"]
            else:
                problems = dicom_checks.check_same_kos(docs[0].content or b"", reference,
                                                       expected_location_uid=self.config.imaging_source_unique_id)
            if not problems:
                record.exports["report.SOPInstanceUID"] = _unique_id(eo)
                record.exports["report.entryUUID"] = eo.get("id", "")
                return []
            if first_problems is None:
                first_problems = problems
        return [f"KOS {_unique_id(candidates[0])}: " + "; ".join(first_problems or [])]

    def _same_kos_metadata(self, record: StepRecord, patient: str, reference: Path, siuid: str) -> list[str]:
        """NIST ``DetailXmlKOSMetadataContent``: patient id, mimeType, formatCode, uniqueId = KOS SOP Instance UID."""
        if not siuid or siuid.startswith("$"):
            return ["no KOS SOP Instance UID from the KOS check"]
        entries = [eo for eo in self._find_dicom_entries(record, patient) if _unique_id(eo) == siuid]
        if not entries:
            return [f"no DocumentEntry with uniqueId {siuid} for {patient}"]
        try:
            ref_root = parse(reference.read_bytes())
        except (OSError, XmlError) as exc:
            return [f"reference metadata unreadable: {exc}"]
        ref_eo = next(descendants(ref_root, "ExtrinsicObject"), None)
        if ref_eo is None:
            return ["reference metadata holds no ExtrinsicObject"]
        eo = entries[0]
        problems: list[str] = []
        ref_patient = _identifier(ref_root, IdentificationScheme.SubmissionSet_patientId.value)
        got_patient = _identifier(eo, IdentificationScheme.DocumentEntry_patientId.value)
        if ref_patient and got_patient != ref_patient:
            problems.append(f"patientId {got_patient}, reference {ref_patient}")
        if eo.get("mimeType") != ref_eo.get("mimeType"):
            problems.append(f"mimeType {eo.get('mimeType')}, reference {ref_eo.get('mimeType')}")
        if _format_code(eo) != _format_code(ref_eo):
            problems.append(f"formatCode {_format_code(eo)}, reference {_format_code(ref_eo)}")
        return problems


def _unique_id(eo: etree._Element) -> str:
    return _identifier(eo, IdentificationScheme.DocumentEntry_uniqueId.value)


def _identifier(element: etree._Element, scheme: str) -> str:
    for ei in descendants(element, "ExternalIdentifier"):
        if ei.get("identificationScheme") == scheme:
            return (ei.get("value") or "").strip()
    return ""


def _format_code(eo: etree._Element) -> tuple[str, str]:
    from xds_core.vocabulary import ClassificationScheme

    for cl in children(eo, "Classification"):
        if cl.get("classificationScheme") == ClassificationScheme.DocumentEntry_formatCode.value:
            scheme = expectations.slot_values(cl).get("codingScheme", [""])[0]
            return (cl.get("nodeRepresentation") or "", scheme)
    return ("", "")


def _inline_binaries(body: etree._Element) -> etree._Element:
    """A copy whose ``xop:Include`` children are dropped: the schema types those elements base64Binary
    and the MTOM part stands for the inline content (XOP 1.0 §3), which the schema never sees."""
    copy = etree.fromstring(etree.tostring(body))
    for include in list(descendants(copy, "Include")):
        parent = include.getparent()
        if parent is not None:
            parent.remove(include)
            parent.text = ""
    return copy


__all__ = ["Config", "Runner", "CaseResult", "StepRecord", "PASS", "FAIL", "SKIP"]
