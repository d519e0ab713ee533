"""Run reports: one console line per case plus a summary, and JUnit XML for CI tools."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TextIO

from lxml import etree

from conformance.runner import FAIL, PASS, SKIP, CaseResult


def _one_line(text: str) -> str:
    return " ".join(text.split())


def console(results: list[CaseResult], out: TextIO) -> None:
    """``PASS|FAIL|SKIP <id> <reason>`` per case, then ``N passed, M failed, K skipped`` alone on a line."""
    for result in results:
        out.write(f"{result.verdict} {result.case.id} {_one_line(result.reason)}".rstrip() + "\n")
    counts = Counter(r.verdict for r in results)
    out.write(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped\n")
    out.flush()


def junit(results: list[CaseResult], path: Path, *, name: str = "xds_conformance",
          system_out: list[str] | None = None) -> None:
    """JUnit XML: one testcase per case (classname = its transaction), steps in system-out;
    ``system_out`` lines (the run's code rewrites) go to the testsuite's own system-out."""
    counts = Counter(r.verdict for r in results)
    suite = etree.Element("testsuite", name=name, tests=str(len(results)), failures=str(counts[FAIL]),
                          errors="0", skipped=str(counts[SKIP]),
                          time=f"{sum(r.seconds for r in results):.3f}")
    for result in results:
        case = etree.SubElement(suite, "testcase", classname=f"{name}.{result.case.transaction}",
                                name=result.case.id, time=f"{result.seconds:.3f}")
        if result.verdict == FAIL:
            etree.SubElement(case, "failure", message=_one_line(result.reason)[:1000]).text = result.reason
        elif result.verdict == SKIP:
            etree.SubElement(case, "skipped", message=_one_line(result.reason)[:1000])
        if result.steps:
            lines = [f"{r.verdict} {r.step.id} ({r.seconds:.2f}s)" + (f": {'; '.join(r.reasons)}" if r.reasons else "")
                     for r in result.steps]
            etree.SubElement(case, "system-out").text = "\n".join(lines)
    if system_out:
        etree.SubElement(suite, "system-out").text = "\n".join(system_out)
    suites = etree.Element("testsuites")
    suites.append(suite)
    path.write_bytes(etree.tostring(suites, encoding="UTF-8", xml_declaration=True, pretty_print=True))
