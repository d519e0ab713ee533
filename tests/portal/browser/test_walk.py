"""The clinician's walk through the portal in a real browser (issue #12, point 5), on ``make run``'s demo.

Hospital B's demo user logs in at Hospital B's portal, sees the domain's sites, finds the demo patient
``IDS-AD002-a``, opens Hospital A's manifest of the NIST study, sees one rendered thumbnail per series,
imports the study into Hospital B's PACS (checked through Orthanc B's QIDO-RS) and downloads it as a zip.
Hospital A's user, at Hospital B's portal, may look but not import.  Every page is saved as a screenshot.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from django.urls import reverse
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from demo.studies import B_NIST, NIST_PATIENT, NIST_STUDY_UID
from tests.portal.browser import support
from tests.portal.browser.support import CLINICIAN_A, CLINICIAN_B, Demo

pytestmark = [pytest.mark.browser, pytest.mark.slow]
Shot = Callable[[WebDriver, str], Path]
PATIENT = NIST_PATIENT.affinity_id  # IDS-AD002-a


def test_an_anonymous_visitor_is_sent_to_the_login_page(demo: Demo, driver: WebDriver, shot: Shot) -> None:
    driver.delete_all_cookies()

    driver.get(demo.portal("B") + reverse("portal:patients") + f"?pid={PATIENT}")

    assert driver.current_url.startswith(demo.portal("B") + reverse("portal:login"))
    assert driver.find_elements(By.ID, "id_username") and driver.find_elements(By.ID, "id_password")
    assert "Multi" not in support.page_text(driver)  # nothing of the patient before a login
    shot(driver, "01-login")


def test_hospital_bs_clinician_imports_hospital_as_study_into_hospital_bs_pacs(
        demo: Demo, driver: WebDriver, shot: Shot) -> None:
    b = demo.portal("B")
    support.login(driver, b, CLINICIAN_B)

    # Overview: this node, and the affinity domain's sites.
    driver.get(b + reverse("portal:home"))
    for section in ("node", "actors", "endpoints", "sites", "counts", "transactions"):
        assert driver.find_elements(By.ID, section), f"the overview has no #{section}"
    # This node is Hospital B; #sites lists the domain's other sites, each with its state.
    assert "Hospital B" in driver.find_element(By.TAG_NAME, "h1").text
    sites = driver.find_element(By.ID, "sites").text
    assert "Affinity domain" in sites and "Hospital A" in sites, sites
    shot(driver, "02-overview")

    # Patient search by affinity id, through the nav.
    driver.find_element(By.CSS_SELECTOR, f"nav a[href='{reverse('portal:patients')}']").click()
    support.wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "form#patient-search input#pid"))
    shot(driver, "03-patients")
    support.search_patient(driver, b, PATIENT)
    shot(driver, "04-patients-results")

    support.open_patient(driver, PATIENT)
    assert driver.find_elements(By.CSS_SELECTOR, "section.source table.documents tr.document")
    support.source_section(driver, "Hospital B")  # B's own studies of the patient are listed too
    shot(driver, "05-patient")

    support.open_manifest_of(driver, "Hospital A")
    shown = support.wait_for_thumbnails(driver)
    assert len(shown) == len(support.nist_series()), shown  # one per series
    assert all((t["alt"] or "").strip() for t in shown), shown
    assert NIST_STUDY_UID in support.page_text(driver)
    shot(driver, "06-manifest")

    # The import must bring the study: Orthanc B starts without it.
    support.delete_study(demo.orthanc("B"), NIST_STUDY_UID)
    assert support.qido_study(demo.orthanc("B"), NIST_STUDY_UID) == []
    button = driver.find_element(By.CSS_SELECTOR, "form#import-form button#import-button")
    assert button.is_enabled()
    button.click()
    support.wait(driver).until(lambda d: "/imports/" in d.current_url)
    assert driver.find_elements(By.TAG_NAME, "progress") or support.import_state(driver) == "done"
    shot(driver, "07-import-status")
    state = support.wait_for_import(driver)
    assert state.startswith("done"), f"the import ended {state!r}:\n{demo.tail(30)}"
    shot(driver, "08-import-done")

    rows = support.qido_study(demo.orthanc("B"), NIST_STUDY_UID)
    assert [row["00100020"]["Value"][0] for row in rows] == [B_NIST.local_id]  # as B's own patient


def test_hospital_as_study_downloads_as_a_zip_of_its_instances(
        demo: Demo, driver: WebDriver, downloads: Path) -> None:
    b = demo.portal("B")
    support.login(driver, b, CLINICIAN_B)
    support.open_hospital_a_manifest(driver, b, PATIENT)
    for old in downloads.iterdir():
        old.unlink()

    driver.find_element(By.CSS_SELECTOR, "a#download-zip").click()

    path = support.wait_for_download(downloads)
    assert path.suffix == ".zip", path.name
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        members = [m for m in archive.infolist() if not m.is_dir()]
        dicom = [m for m in members if archive.read(m)[128:132] == b"DICM"]
    assert len(dicom) == sum(support.nist_series().values()), [m.filename for m in members]


def test_hospital_as_user_at_hospital_bs_portal_may_look_but_not_import(
        demo: Demo, driver: WebDriver, shot: Shot) -> None:
    b = demo.portal("B")
    support.login(driver, b, CLINICIAN_A)
    support.open_hospital_a_manifest(driver, b, PATIENT)

    buttons = driver.find_elements(By.CSS_SELECTOR, "button#import-button")
    assert not buttons or not buttons[0].is_enabled(), "Hospital A's user may import into Hospital B's PACS"
    assert "Only its own users act on its PACS" in support.page_text(driver)  # portal.access.why_not_home
    shot(driver, "09-manifest-other-hospitals-user")
