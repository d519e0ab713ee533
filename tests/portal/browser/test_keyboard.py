"""The main flow with the keyboard alone (issue #12, point 5): TAB, ENTER and typing, never a click.

Hospital B's demo user logs in, reaches the patient search, finds ``IDS-AD002-a``, opens the patient and
Hospital A's manifest, and starts its import into Hospital B's PACS.  Every TAB must move the focus to an
element that shows it (an outline or a shadow), and the first TAB of a page lands on the skip link, which
takes the focus to the page's main content (the login page may instead start in its user name field).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django.urls import reverse
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

from demo.studies import NIST_PATIENT
from tests.portal.browser import support
from tests.portal.browser.support import CLINICIAN_B, DEMO_PASSWORD, Demo, press, tab_to

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PATIENT = NIST_PATIENT.affinity_id


def _is(selector: str) -> Callable[[WebElement], bool]:
    return lambda element: bool(element.parent.execute_script("return arguments[0].matches(arguments[1])",
                                                              element, selector))


def _in_hospital_a_section(element: WebElement) -> bool:
    return bool(element.parent.execute_script(
        "const s = arguments[0].closest('section.source'); const h = s && s.querySelector('h2');"
        "return arguments[0].matches('a.manifest-link') && !!h && h.textContent.includes('Hospital A');", element))


def _first_tab_is_the_skip_link(driver: WebDriver) -> None:
    press(driver, Keys.TAB)
    first = support.active(driver)
    assert first is not None and "skip" in (first["classes"] or "") and first["href"] == "#main", first
    assert first["outline"] or first["shadow"], f"the skip link shows no focus: {first}"
    on_screen = driver.execute_script("const r = document.activeElement.getBoundingClientRect();"
                                      "return r.left >= 0 && r.top >= 0 && r.width > 0;")
    assert on_screen, "the focused skip link is off-screen"


def _loaded(driver: WebDriver, test: Callable[[WebDriver], object]) -> None:
    support.wait(driver).until(lambda d: d.execute_script("return document.readyState") == "complete" and test(d))


def test_the_main_flow_works_with_the_keyboard_alone(
        demo: Demo, driver: WebDriver, shot: Callable[[WebDriver, str], Path]) -> None:
    b = demo.portal("B")
    driver.delete_all_cookies()
    driver.get(b + reverse("portal:login"))

    start = support.active(driver)
    if start is None:  # no autofocus: the skip link first, then the user name field
        _first_tab_is_the_skip_link(driver)
        tab_to(driver, _is("input#id_username"), "the user name field")
    else:  # the login form's autofocus: typing goes straight into the user name
        assert start["id"] == "id_username", f"the login page starts with the focus on {start}"
    press(driver, CLINICIAN_B)
    tab_to(driver, _is("input#id_password"), "the password field")
    press(driver, DEMO_PASSWORD, Keys.ENTER)
    _loaded(driver, lambda d: "/login/" not in d.current_url)
    shot(driver, "20-keyboard-logged-in")

    _first_tab_is_the_skip_link(driver)
    tab_to(driver, _is(f"a[href='{reverse('portal:patients')}']"), "the Patients link")
    press(driver, Keys.ENTER)
    _loaded(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "input#pid"))

    _first_tab_is_the_skip_link(driver)
    press(driver, Keys.ENTER)  # the skip link: the focus goes to <main>, the next TAB is inside it
    assert support.active_element(driver).get_attribute("id") == "main"
    tab_to(driver, _is("form#patient-search input#pid"), "the patient id field", limit=5)
    press(driver, PATIENT, Keys.ENTER)
    _loaded(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "table#patients-results a.patient-link"))
    shot(driver, "21-keyboard-patients-results")

    tab_to(driver, _is("table#patients-results a.patient-link"), "the patient's link")
    assert PATIENT in support.active_element(driver).text
    press(driver, Keys.ENTER)
    _loaded(driver, lambda d: PATIENT in d.find_element(By.TAG_NAME, "h1").text)

    tab_to(driver, _in_hospital_a_section, "Hospital A's manifest link", limit=120)
    press(driver, Keys.ENTER)
    _loaded(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "form#import-form"))
    support.wait_for_thumbnails(driver)
    shot(driver, "22-keyboard-manifest")

    tab_to(driver, _is("form#import-form button#import-button"), "the import button", limit=120)
    press(driver, Keys.ENTER)
    _loaded(driver, lambda d: "/imports/" in d.current_url)
    state = support.wait_for_import(driver)  # ended before the walk's own import starts
    shot(driver, "23-keyboard-import")
    assert state.startswith("done"), f"the import ended {state!r}"
