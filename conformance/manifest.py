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
        return self.raw.get("bind") or {}

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

    def dependencies(self) -> set[str]:
        """Ids of the steps whose exports or responses this step reads."""
        deps = {b["from"] for b in self.bind.values() if isinstance(b, dict) and "from" in b}
        compare = self.expect.get("compareWithQueryResultOf")
        if compare:
            deps.add(str(compare))
        for assertion in self.expect.get("assertions") or []:
            if isinstance(assertion, dict) and assertion.get("response_of"):
                deps.add(str(assertion["response_of"]))
        return deps

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

    def file(self, relative: str) -> Path:
        return self.root / relative

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


def _problems_of_step(step: Step, root: Path) -> list[str]:
    problems: list[str] = []
    if step.transaction not in TRANSACTION_ENDPOINTS:
        problems.append(f"step {step.id}: unknown transaction {step.transaction!r}")
    request = step.request
    if request:
        body = request.get("body")
        if not body or not (root / str(body)).is_file():
            problems.append(f"step {step.id}: request body {body!r} not found")
        if request.get("format") not in KNOWN_FORMATS:
            problems.append(f"step {step.id}: unknown request format {request.get('format')!r}")
        for doc in request.get("documents") or []:
            if not (root / str(doc.get("file"))).is_file():
                problems.append(f"step {step.id}: document {doc.get('file')!r} not found")
    elif step.transaction in ("ITI-42", "ITI-41", "RAD-68", "ITI-18", "ITI-51", "ITI-43", "RAD-69"):
        problems.append(f"step {step.id}: transaction {step.transaction} without request")
    for symbol, binding in step.bind.items():
        if not isinstance(binding, dict) or not binding.keys() & {"from", "patient", "config", "builtin", "generate"}:
            problems.append(f"step {step.id}: binding {symbol!r} has no source")
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
    scenarios: list[Scenario] = []
    steps: dict[str, Step] = {}
    scenario_of: dict[str, Scenario] = {}
    for raw_scenario in data["scenarios"]:
        sid = str(raw_scenario.get("id"))
        scenario = Scenario(
            id=sid, title=str(raw_scenario.get("title", "")), actor=str(raw_scenario.get("actor", "")),
            group=str(raw_scenario.get("group", "")), run_patient=raw_scenario.get("runPatient"), steps=[])
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
