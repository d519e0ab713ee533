"""Loading the replay manifest (``conformance/corpus/manifest.yaml``, format in its README §7).

The manifest is data written by someone else: everything is checked on load and
a malformed manifest raises :class:`ManifestError` with every problem found,
instead of failing half-way through a run.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conformance.testplan import (
    ASSERTION_PROCESSES,
    CONTENTS_COUNTS,
    CONTENTS_FLAGS,
    DOCUMENT_ENTRIES,
    UnsupportedError,
    parse_document_entries,
    scan_testplan,
    testkit_binding,
)

#: Transactions a step may name (README §7) -> endpoint(s) the step talks to.
TRANSACTION_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "ITI-42": ("registry",),
    "ITI-18": ("registry",),
    "ITI-51": ("registry",),
    "ITI-41": ("repository",),
    "RAD-68": ("repository",),
    "ITI-43": ("repository",),
    "RAD-69": ("imaging-source",),
    "PIF": ("feed",),
    "SETUP": (),
    "CHECK": (),
    "CHECK-RAD69-RESPONSE": (),
    # The IDS's RAD-68 is found through the registry (ITI-18) and its KOS
    # fetched from the repository (ITI-43); the IDS itself is the actor under test.
    "CHECK-IDS-OUTPUT": ("registry", "repository", "imaging-source"),
}

KNOWN_FORMATS = {"ebrim-2.1", "ebrim-3.0", "ebrim-3.0-nonstd", "pnr-ebrim-3.0", "query-3.0", "xdsb", "xdsi-b"}

#: What the runner implements of the manifest format (README §7); anything else makes the step unsupported.
STEP_KEYS = frozenset({"id", "transaction", "request", "patient", "assign", "bind", "reports", "waitBeforeMs",
                       "expect", "notes", "goal", "action", "placeholderStyle"})
REQUEST_KEYS = frozenset({"body", "format", "storedQuery", "returnType", "documents"})
DOCUMENT_KEYS = frozenset({"id", "file", "idIsPlaceholder"})
PATIENT_MODES = frozenset({"assign", "placeholder"})
ASSIGN_KEYS = frozenset({"uniqueIds", "uuids", "sourceId", "uniqueIdExcludeObjects", "uniqueIdExcludeSchemes"})
EXPECT_KEYS = frozenset({"status", "errorMessageContains", "errorCode", "contents", "assertions",
                         "retrievedDocumentsEqual", "compareWithQueryResultOf"})
STATUSES = frozenset({"Success", "Failure", "PartialSuccess", "Fault"})
BINDING_SOURCES = ("from", "patient", "config", "builtin", "generate")
#: ``{config: X}``: run parameters (``--home-community-id``, ``--source-id``) and the systems under
#: test's own configuration (``--repository-unique-id``, ``--imaging-source-unique-id``).
CONFIG_VALUES = frozenset({"homeCommunityId", "sourceId", "repositoryUniqueId", "imagingSourceUniqueId"})
BUILTINS = frozenset({"now", "lastyear", "DATE", "date"})
GENERATE_KINDS = frozenset({"oid", "urn:uuid"})
#: ``{from: step, key: K}``: K is ``<prefix><objectId|name>`` or exactly ``repositoryUniqueId``
#: (the toolkit's UseRepositoryUniqueId: the single repositoryUniqueId of that step's query result).
EXPORT_PREFIXES = ("uid.", "uuid.", "patient.", "report.", "generated.")
REPOSITORY_UNIQUE_ID_KEY = "repositoryUniqueId"
XPATH_ASSERTION_KEYS = frozenset({"id", "xpath"})
PROCESS_ASSERTION_KEYS = frozenset({"id", "process", "response_of", "dicomTags", "referenceImages", "reference",
                                    "submittedFor"})
SCENARIO_KEYS = frozenset({"id", "title", "actor", "group", "runPatient", "origin", "steps"})

_MUTUALLY_EXCLUSIVE = re.compile(r"mutually exclusive with (\S+?)[:;,]?(\s|$)")


class ManifestError(ValueError):
    """The manifest is unusable; ``problems`` lists every finding."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class Step:
    """One manifest step (``<test>/<section>/<TestStep id>[#n]``)."""

    id: str
    scenario_id: str
    transaction: str
    raw: dict[str, Any]

    @property
    def section(self) -> str:
        """``<test>/<section>``: the unit whose log assertions see (README §5)."""
        return self.id.rsplit("/", 1)[0] if self.id.count("/") >= 2 else self.id

    @property
    def local_id(self) -> str:
        """The ``TestStep/@id`` as the testplan spells it (no ``#n`` suffix)."""
        return self.id.rsplit("/", 1)[-1].split("#", 1)[0]

    @property
    def request(self) -> dict[str, Any]:
        return self.raw.get("request") or {}

    @property
    def expect(self) -> dict[str, Any]:
        return self.raw.get("expect") or {}

    @property
    def bind(self) -> dict[str, dict[str, Any]]:
        """Symbol -> binding; testkit-shaped references (``{testdir, step, section, id}``) converted."""
        out: dict[str, dict[str, Any]] = {}
        for symbol, binding in (self.raw.get("bind") or {}).items():
            if isinstance(binding, dict) and not binding.keys() & set(BINDING_SOURCES):
                try:
                    binding = testkit_binding(binding, self.section)
                except UnsupportedError:
                    pass  # reported by unsupported()
            out[str(symbol)] = binding
        return out

    @property
    def assign(self) -> dict[str, Any]:
        return self.raw.get("assign") or {}

    @property
    def patient(self) -> dict[str, Any]:
        return self.raw.get("patient") or {}

    @property
    def reports(self) -> dict[str, dict[str, str]]:
        return self.raw.get("reports") or {}

    @property
    def notes(self) -> list[str]:
        return [str(n) for n in self.raw.get("notes") or []]

    @property
    def wait_before_ms(self) -> int:
        return int(self.raw.get("waitBeforeMs") or 0)

    def content_references(self) -> list[dict[str, str]]:
        """Bindings named inside ``expect.contents`` (``DocumentEntries`` UseIds given as references)."""
        refs: list[dict[str, str]] = []
        for item in self.expect.get("contents") or []:
            if not isinstance(item, dict) or DOCUMENT_ENTRIES not in item:
                continue
            try:
                spec = parse_document_entries(item[DOCUMENT_ENTRIES])
                refs += [testkit_binding(u, self.section) for u in spec.use_ids() if isinstance(u, dict)]
            except UnsupportedError:
                continue  # reported by unsupported()
        return refs

    def dependencies(self) -> set[str]:
        """Ids of the steps whose exports or responses this step reads."""
        deps = {str(b["from"]) for b in self.bind.values() if isinstance(b, dict) and "from" in b}
        deps |= {r["from"] for r in self.content_references() if "from" in r}
        compare = self.expect.get("compareWithQueryResultOf")
        if compare:
            deps.add(str(compare))
        for assertion in self.expect.get("assertions") or []:
            if isinstance(assertion, dict) and assertion.get("response_of"):
                deps.add(str(assertion["response_of"]))
        return deps

    def unsupported(self) -> list[str]:
        """Every manifest element of this step the runner does not implement (README §7 vocabulary)."""
        return _unsupported_in_step(self)

    def exclusive_with(self) -> str | None:
        """Section this step is an alternative to (``notes: mutually exclusive with X``)."""
        for note in self.notes:
            match = _MUTUALLY_EXCLUSIVE.search(note)
            if match:
                return match.group(1)
        return None


@dataclass
class Scenario:
    id: str
    title: str
    actor: str
    group: str
    run_patient: str | None
    steps: list[Step]
    unknown_keys: list[str] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return "blocked" in self.group


@dataclass
class Case:
    id: str
    transaction: str
    step_ids: list[str]

    @property
    def blocked(self) -> bool:
        return "blocked" in self.transaction.lower()


@dataclass
class Manifest:
    path: Path
    root: Path
    patients: dict[str, dict[str, Any]]
    cases: list[Case]
    scenarios: list[Scenario]
    steps: dict[str, Step] = field(default_factory=dict)
    scenario_of: dict[str, Scenario] = field(default_factory=dict)
    _unsupported: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def file(self, relative: str) -> Path:
        return self.root / relative

    def testplan_of(self, step: Step) -> Path | None:
        """The verbatim ``nist/<test>/<section>/testplan.xml`` of a testkit step (None for other sources)."""
        path = self.root / "nist" / step.section / "testplan.xml"
        return path if path.is_file() else None

    def unsupported(self, step_id: str) -> list[str]:
        """What the runner cannot do for this step: manifest elements it does not implement, and
        elements of the step's ``testplan.xml`` outside :data:`conformance.testplan.VOCABULARY`."""
        if step_id not in self._unsupported:
            step = self.steps[step_id]
            found = [f"scenario key {k!r}" for k in self.scenario_of[step_id].unknown_keys] + step.unsupported()
            testplan = self.testplan_of(step)
            if testplan is not None:
                found += [f"testplan {f}" for f in scan_testplan(testplan, step.local_id)]
            self._unsupported[step_id] = found
        return self._unsupported[step_id]

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise KeyError(case_id)

    def case_of_step(self, step_id: str) -> Case | None:
        for case in self.cases:
            if step_id in case.step_ids:
                return case
        return None

    def select(self, patterns: list[str] | None) -> list[Case]:
        """Cases whose id matches any glob (all when none given), in manifest order."""
        if not patterns:
            return list(self.cases)
        return [c for c in self.cases if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)]

    def with_dependencies(self, selected: list[Case]) -> list[Case]:
        """``selected`` plus every case owning a step they read from, transitively, in manifest order."""
        wanted = {c.id for c in selected}
        changed = True
        while changed:
            changed = False
            for case in self.cases:
                if case.id not in wanted:
                    continue
                for step_id in case.step_ids:
                    for dep in self.steps[step_id].dependencies():
                        owner = self.case_of_step(dep)
                        if owner is not None and owner.id not in wanted:
                            wanted.add(owner.id)
                            changed = True
        return [c for c in self.cases if c.id in wanted]


def _unsupported_in_step(step: Step) -> list[str]:
    """Manifest vocabulary of one step the runner does not implement, each named (README §7)."""
    found: list[str] = [f"step key {k!r}" for k in step.raw if k not in STEP_KEYS]
    if step.transaction not in TRANSACTION_ENDPOINTS:
        found.append(f"unknown transaction {step.transaction!r}")
    request = step.raw.get("request") or {}
    if not isinstance(request, dict):
        return [*found, "request is not a mapping"]
    found += [f"request key {k!r}" for k in request if k not in REQUEST_KEYS]
    if request and request.get("format") not in KNOWN_FORMATS:
        found.append(f"unknown request format {request.get('format')!r}")
    for doc in request.get("documents") or []:
        found += [f"request.documents key {k!r}" for k in (doc if isinstance(doc, dict) else {"?": 0})
                  if k not in DOCUMENT_KEYS]
    if step.patient and step.patient.get("mode", "placeholder") not in PATIENT_MODES:
        found.append(f"patient mode {step.patient.get('mode')!r}")
    found += [f"assign key {k!r}" for k in step.assign if k not in ASSIGN_KEYS]
    for symbol, binding in step.bind.items():
        found += [f"binding {symbol}: {p}" for p in _binding_problems(binding)]
    for name, spec in step.reports.items():
        if not isinstance(spec, dict) or spec.get("from", "Result") not in ("InputMetadata", "Result") \
                or not spec.get("xpath"):
            found.append(f"report {name}: {spec!r}")
    found += _unsupported_expectations(step)
    return found


def _binding_problems(binding: Any) -> list[str]:
    if not isinstance(binding, dict):
        return [f"unreadable binding {binding!r}"]
    sources = [k for k in BINDING_SOURCES if k in binding]
    if len(sources) != 1:
        return [f"binding kind {sorted(binding)!r} (one of {', '.join(BINDING_SOURCES)} expected)"]
    kind = sources[0]
    if kind == "config" and binding["config"] not in CONFIG_VALUES:
        return [f"config value {binding['config']!r}"]
    if kind == "builtin" and binding["builtin"] not in BUILTINS:
        return [f"builtin {binding['builtin']!r}"]
    if kind == "generate" and binding["generate"] not in GENERATE_KINDS:
        return [f"generate {binding['generate']!r}"]
    if kind == "from":
        if "xpath" in binding:
            return [] if set(binding) <= {"from", "xpath"} else [f"binding keys {sorted(binding)!r}"]
        key = str(binding.get("key", ""))
        if key != REPOSITORY_UNIQUE_ID_KEY and not key.startswith(EXPORT_PREFIXES):
            return [f"export key {key!r}"]
    return []


def _unsupported_expectations(step: Step) -> list[str]:
    expect = step.raw.get("expect") or {}
    if not isinstance(expect, dict):
        return ["expect is not a mapping"]
    found = [f"expect key {k!r}" for k in expect if k not in EXPECT_KEYS]
    found += [f"expected status {s!r}" for s in expect.get("status") or [] if str(s) not in STATUSES]
    for item in expect.get("contents") or []:
        if isinstance(item, str):
            if item not in CONTENTS_FLAGS:
                found.append(f"ExpectedContents/{item}")
        elif isinstance(item, dict):
            for key, value in item.items():
                if key in CONTENTS_COUNTS and (isinstance(value, int) or str(value).isdigit()):
                    continue
                if key == DOCUMENT_ENTRIES:
                    try:
                        spec = parse_document_entries(value)
                        for use_id in spec.use_ids():
                            if isinstance(use_id, dict):
                                found += [f"{DOCUMENT_ENTRIES} UseId: {p}"
                                          for p in _binding_problems(testkit_binding(use_id, step.section))]
                    except UnsupportedError as exc:
                        found.append(str(exc))
                    continue
                found.append(f"ExpectedContents/{key}")
        else:
            found.append(f"ExpectedContents item {item!r}")
    processes = ASSERTION_PROCESSES.get(step.transaction, frozenset())
    for assertion in expect.get("assertions") or []:
        if not isinstance(assertion, dict):
            found.append(f"assertion {assertion!r}")
        elif "process" in assertion:
            if assertion["process"] not in processes:
                found.append(f"Assert@process={assertion['process']!r} in a {step.transaction} step")
            found += [f"assertion key {k!r}" for k in assertion if k not in PROCESS_ASSERTION_KEYS]
        elif "xpath" in assertion:
            found += [f"assertion key {k!r}" for k in assertion if k not in XPATH_ASSERTION_KEYS]
        else:
            found.append(f"assertion without xpath or process: {sorted(assertion)!r}")
    for item in expect.get("retrievedDocumentsEqual") or []:
        found += [f"retrievedDocumentsEqual key {k!r}" for k in (item if isinstance(item, dict) else {"?": 0})
                  if k not in ("uid", "file")]
    return found


def _problems_of_step(step: Step, root: Path) -> list[str]:
    """Structural problems (missing files): the manifest cannot be used at all."""
    problems: list[str] = []
    request = step.request if isinstance(step.request, dict) else {}
    if request:
        body = request.get("body")
        if not body or not (root / str(body)).is_file():
            problems.append(f"step {step.id}: request body {body!r} not found")
        for doc in request.get("documents") or []:
            if isinstance(doc, dict) and not (root / str(doc.get("file"))).is_file():
                problems.append(f"step {step.id}: document {doc.get('file')!r} not found")
    elif step.transaction in ("ITI-42", "ITI-41", "RAD-68", "ITI-18", "ITI-51", "ITI-43", "RAD-69"):
        problems.append(f"step {step.id}: transaction {step.transaction} without request")
    for item in step.expect.get("retrievedDocumentsEqual") or []:
        if not (root / str(item.get("file"))).is_file():
            problems.append(f"step {step.id}: reference document {item.get('file')!r} not found")
    for assertion in step.expect.get("assertions") or []:
        ref = assertion.get("reference") if isinstance(assertion, dict) else None
        if ref and not (root / str(ref)).is_file():
            problems.append(f"step {step.id}: assertion reference {ref!r} not found")
    return problems


def load_manifest(path: Path) -> Manifest:
    """Parse and check a manifest; file paths are relative to its folder."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError([f"cannot read manifest {path}: {exc}"]) from exc
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), list):
        raise ManifestError([f"{path}: not a replay manifest (no scenarios list)"])
    root = path.parent
    problems: list[str] = []
    if data.get("manifestVersion", 1) != 1:
        problems.append(f"manifestVersion {data.get('manifestVersion')!r}: this runner reads version 1")
    scenarios: list[Scenario] = []
    steps: dict[str, Step] = {}
    scenario_of: dict[str, Scenario] = {}
    for raw_scenario in data["scenarios"]:
        sid = str(raw_scenario.get("id"))
        scenario = Scenario(
            id=sid, title=str(raw_scenario.get("title", "")), actor=str(raw_scenario.get("actor", "")),
            group=str(raw_scenario.get("group", "")), run_patient=raw_scenario.get("runPatient"), steps=[],
            unknown_keys=[str(k) for k in raw_scenario if k not in SCENARIO_KEYS])
        for raw_step in raw_scenario.get("steps") or []:
            step = Step(id=str(raw_step.get("id")), scenario_id=sid,
                        transaction=str(raw_step.get("transaction")), raw=raw_step)
            if step.id in steps:
                problems.append(f"duplicate step id {step.id}")
            steps[step.id] = step
            scenario_of[step.id] = scenario
            scenario.steps.append(step)
            problems.extend(_problems_of_step(step, root))
        scenarios.append(scenario)
    cases: list[Case] = []
    for raw_case in data.get("cases") or []:
        case = Case(id=str(raw_case.get("id")), transaction=str(raw_case.get("transaction", "")),
                    step_ids=[str(s) for s in raw_case.get("steps") or []])
        for step_id in case.step_ids:
            if step_id not in steps:
                problems.append(f"case {case.id}: unknown step {step_id}")
        cases.append(case)
    for step in steps.values():
        for dep in step.dependencies():
            if dep not in steps:
                problems.append(f"step {step.id}: refers to unknown step {dep}")
    if problems:
        raise ManifestError(problems)
    return Manifest(path=path, root=root, patients=dict(data.get("patients") or {}), cases=cases,
                    scenarios=scenarios, steps=steps, scenario_of=scenario_of)
