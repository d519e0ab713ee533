"""axe-core on every page of the portal (issue #12, point 5): 0 serious or critical violations per page.

axe-core (``npm ci``: package.json pins it) runs inside the same Chromium session, on the pages as Hospital B's
demo user sees them on ``make run``'s demo: the login page, the overview, the patient search with and without
results, the patient, Hospital A's manifest (thumbnails loaded), an import's status page (once done) and the
operator's pages.  Each page is a test of its own, so a report names the page that fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django.urls import reverse
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from demo.studies import NIST_PATIENT
from tests.portal.browser import support
from tests.portal.browser.support import CLINICIAN_B, Demo

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PATIENT = NIST_PATIENT.affinity_id


def _login(driver: WebDriver, b: str) -> None:
    driver.delete_all_cookies()
    driver.get(b + reverse("portal:login"))


def _overview(driver: WebDriver, b: str) -> None:
    driver.get(b + reverse("portal:home"))


def _patients(driver: WebDriver, b: str) -> None:
    driver.get(b + reverse("portal:patients"))
    driver.find_element(By.CSS_SELECTOR, "form#patient-search")


def _patients_results(driver: WebDriver, b: str) -> None:
    support.search_patient(driver, b, PATIENT)


def _patient(driver: WebDriver, b: str) -> None:
    support.search_patient(driver, b, PATIENT)
    support.open_patient(driver, PATIENT)


def _manifest(driver: WebDriver, b: str) -> None:
    support.open_hospital_a_manifest(driver, b, PATIENT)
    support.wait_for_thumbnails(driver)


def _import_status(driver: WebDriver, b: str) -> None:
    _manifest(driver, b)
    driver.find_element(By.CSS_SELECTOR, "button#import-button").click()
    support.wait(driver).until(lambda d: "/imports/" in d.current_url)
    # As landed (the job just queued or running: the page a clinician watches), then once ended (the test
    # checks that one); waiting for the end also keeps this job from racing the walk's own import.
    landed, url = support.import_state(driver) or "?", driver.current_url
    bad = support.failing(support.axe_violations(driver))
    state = support.wait_for_import(driver)
    assert not bad, f"import status while {landed} ({url}): serious/critical axe-core violations:\n" \
        + support.describe(bad)
    assert state.startswith("done"), f"the import ended {state!r}"


def _page(name: str) -> Callable[[WebDriver, str], None]:
    return lambda driver, b: driver.get(b + reverse(name))


PAGES: dict[str, Callable[[WebDriver, str], None]] = {
    "login": _login,
    "overview": _overview,
    "patients": _patients,
    "patients-results": _patients_results,
    "patient": _patient,
    "manifest": _manifest,
    "import-status": _import_status,
    "operator": _page("portal:operator"),
    "operator-studies": _page("portal:operator_studies"),
    "reconciliation": _page("portal:reconciliation"),
    "operator-jobs": _page("portal:operator_jobs"),
    "mpps": _page("portal:mpps"),
}


@pytest.mark.parametrize("page", list(PAGES))
def test_the_page_has_no_serious_or_critical_axe_violation(
        page: str, demo: Demo, driver: WebDriver, shot: Callable[[WebDriver, str], Path]) -> None:
    b = demo.portal("B")
    if page != "login" and not _logged_in(driver, b):
        support.login(driver, b, CLINICIAN_B)
    PAGES[page](driver, b)
    assert "/login/" not in driver.current_url or page == "login", f"{page}: sent to the login page"
    shot(driver, f"{30 + list(PAGES).index(page):02d}-a11y-{page}")

    support.assert_accessible(driver, page)


def _logged_in(driver: WebDriver, b: str) -> bool:
    return driver.current_url.startswith(b) and bool(driver.find_elements(By.CSS_SELECTOR, "form.who"))
