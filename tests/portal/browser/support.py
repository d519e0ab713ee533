"""Helpers of the browser tests: the two-hospital demo as ``make run`` starts it, Debian's Chromium driven by
Selenium through chromium-driver (paths given, nothing downloaded), screenshots, axe-core and keyboard moves.

The demo itself (the real ``config.supervisor`` on free ports) is started by tests/demo_process.py, shared
with ``tests/config/test_two_hospital_demo.py``; ``Demo`` and ``delete_study`` are re-exported from there.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import JavascriptException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.demo_process import Demo as Demo  # re-exported: the browser tests import it from here
from tests.demo_process import delete_study as delete_study

BASE_DIR = Path(__file__).resolve().parents[3]
AXE_JS = BASE_DIR / "node_modules" / "axe-core" / "axe.min.js"
#: The demo users' password the tests start the demo with (``DEMO_PASSWORD``; xds_demo_load creates the users).
DEMO_PASSWORD = "browser-test-demo-password"
#: Hospital B's and Hospital A's demo users (xds_demo_load; both exist on every site's node).
CLINICIAN_B = "clinician-b"
CLINICIAN_A = "clinician-a"
#: axe-core impacts that fail a page (issue #12: 0 serious or critical violations per page).
FAILING_IMPACTS = ("serious", "critical")


# --- Orthanc (the hospitals' PACS), to check what an import did ----------------------------------------


def qido_study(orthanc: str, study_uid: str) -> list[dict[str, Any]]:
    """QIDO-RS (DICOM PS3.18 10.6) for one study at an Orthanc's DICOMweb root: the matching rows."""
    response = requests.get(f"{orthanc}/dicom-web/studies", params={"StudyInstanceUID": study_uid}, timeout=30)
    response.raise_for_status()
    return response.json() if response.content else []


# --- Chromium ---------------------------------------------------------------------------------------


def chromium(profile_dir: Path, download_dir: Path) -> WebDriver:
    """Headless Debian Chromium, fresh profile, 1280x900, downloads into ``download_dir``.

    Both paths are given, so Selenium Manager never runs (and SE_OFFLINE forbids it anyway): nothing is
    fetched from the internet.  ``CHROMIUM`` / ``CHROMEDRIVER`` override the Debian paths.
    """
    binary = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    driver_path = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
    for path, package in ((binary, "chromium"), (driver_path, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} missing: install Debian's {package} (apt-get install chromium chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"
    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--user-data-dir={profile_dir}", "--window-size=1280,900", "--force-device-scale-factor=1",
                     "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                     "--disable-background-networking", "--disable-component-update", "--lang=en-US"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(download_dir), "download.prompt_for_download": False,
        "download.directory_upgrade": True, "safebrowsing.enabled": False})
    service = Service(executable_path=driver_path, log_output=str(profile_dir.parent / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return driver


def wait(driver: WebDriver, seconds: float = 20) -> WebDriverWait:
    return WebDriverWait(driver, seconds, poll_frequency=0.2)


def page_text(driver: WebDriver) -> str:
    return str(driver.find_element(By.TAG_NAME, "body").text)


def shot(driver: WebDriver, directory: Path, name: str) -> Path:
    """Save the whole page (not just the viewport, up to 4000 px tall) as ``<directory>/<name>.png``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {"x": 0, "y": 0, "width": max(1280, int(size["width"])), "height": min(4000, int(size["height"])),
            "scale": 1}
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                            "clip": clip})["data"]
    path.write_bytes(base64.b64decode(data))
    return path


def login(driver: WebDriver, base_url: str, username: str, password: str = DEMO_PASSWORD) -> None:
    """Log in on the portal's form (a fresh session: cookies of this node dropped first)."""
    driver.get(f"{base_url}/login/")
    driver.delete_all_cookies()
    driver.get(f"{base_url}/login/")
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait(driver).until(lambda d: "/login/" not in d.current_url or d.find_elements(By.CSS_SELECTOR, ".error-box"))
    if "/login/" in driver.current_url:
        pytest.fail(f"{username} could not log in at {base_url} (password from DEMO_PASSWORD): {page_text(driver)}")


# --- axe-core ---------------------------------------------------------------------------------------

_AXE_RUN = """
const done = arguments[arguments.length - 1];
axe.run(document, {resultTypes: ['violations']}).then(result => done({violations: result.violations.map(v => ({
  id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
  nodes: v.nodes.map(n => ({target: n.target.join(' '), summary: n.failureSummary}))}))}))
  .catch(error => done({error: String(error)}));
"""


def axe_source() -> str:
    """axe-core's script, installed by ``npm ci`` (package-lock.json pins it); a missing copy fails."""
    if not AXE_JS.is_file():
        pytest.fail(f"{AXE_JS.relative_to(BASE_DIR)} missing: run `npm ci` in {BASE_DIR} (axe-core, package-lock.json)")
    return AXE_JS.read_text(encoding="utf-8")


def axe_violations(driver: WebDriver) -> list[dict[str, Any]]:
    """Every axe-core violation on the page now shown (all impacts)."""
    for attempt in range(3):
        try:
            if not driver.execute_script("return typeof window.axe === 'object'"):
                driver.execute_script(axe_source())
            result = driver.execute_async_script(_AXE_RUN)
            break
        except JavascriptException:  # the page navigated (a meta refresh) under the run: run it again
            if attempt == 2:
                raise
            time.sleep(0.5)
    if "error" in result:
        pytest.fail(f"axe-core failed on {driver.current_url}: {result['error']}")
    return list(result["violations"])


def failing(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v["impact"] in FAILING_IMPACTS]


def describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        lines.append(f"- {v['id']} ({v['impact']}): {v['help']} [{v['helpUrl']}]")
        lines += [f"    {node['target']}: {' '.join((node['summary'] or '').split())}" for node in v["nodes"][:8]]
        if len(v["nodes"]) > 8:
            lines.append(f"    ... {len(v['nodes']) - 8} more")
    return "\n".join(lines)


def assert_accessible(driver: WebDriver, page: str) -> None:
    """No serious or critical axe-core violation on the page now shown."""
    bad = failing(axe_violations(driver))
    assert not bad, f"{page} ({driver.current_url}): serious/critical axe-core violations:\n{describe(bad)}"


# --- thumbnails, imports, downloads ------------------------------------------------------------------

_THUMBNAILS = """
return Array.from(document.querySelectorAll('img.thumbnail')).map(img => ({
  src: img.getAttribute('src'), alt: img.getAttribute('alt'), complete: img.complete, width: img.naturalWidth}));
"""


def thumbnails(driver: WebDriver) -> list[dict[str, Any]]:
    return list(driver.execute_script(_THUMBNAILS))


def wait_for_thumbnails(driver: WebDriver, seconds: float = 60) -> list[dict[str, Any]]:
    """Every img.thumbnail loaded; fails naming the ones that did not render (naturalWidth 0)."""
    try:
        wait(driver, seconds).until(lambda d: all(t["complete"] for t in thumbnails(d)))
    except TimeoutException:
        pass
    shown = thumbnails(driver)
    broken = [t["src"] for t in shown if not t["complete"] or t["width"] <= 0]
    assert shown, "the manifest page shows no img.thumbnail"
    assert not broken, f"thumbnails that did not render: {broken}"
    return shown


def import_state(driver: WebDriver) -> str:
    try:
        return " ".join(driver.find_element(By.ID, "import-state").text.split()).lower()
    except Exception:  # noqa: BLE001 - between two refreshes the element may be gone or stale
        return ""


def wait_for_import(driver: WebDriver, seconds: float = 90) -> str:
    """Until #import-state says done or failed.  A page that refreshes itself (meta refresh) is watched;
    one that does not is reloaded every second, as its reader would."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = import_state(driver)
        if state.startswith(("done", "failed")):
            return state
        time.sleep(1)
        try:
            refreshing = driver.find_elements(By.CSS_SELECTOR, "meta[http-equiv='refresh' i]")
        except StaleElementReferenceException:
            refreshing = [True]
        if not refreshing:
            driver.refresh()
    return import_state(driver)


def wait_for_download(directory: Path, seconds: float = 90) -> Path:
    """The one finished file Chromium saved into ``directory`` (no .crdownload left, size steady)."""
    deadline = time.monotonic() + seconds
    last: tuple[str, int] | None = None
    while time.monotonic() < deadline:
        files = [p for p in directory.iterdir() if p.is_file()]
        done = [p for p in files if not p.name.endswith((".crdownload", ".tmp"))]
        if done and len(done) == len(files):
            (path,) = done
            now = (path.name, path.stat().st_size)
            if now == last and now[1] > 0:
                return path
            last = now
        time.sleep(0.3)
    raise AssertionError(f"no finished download in {directory}: {sorted(p.name for p in directory.iterdir())}")


# --- the keyboard -----------------------------------------------------------------------------------

_ACTIVE = """
const e = document.activeElement;
if (!e || e === document.body) return null;
const s = getComputedStyle(e);
return {tag: e.tagName.toLowerCase(), id: e.id, classes: e.className && String(e.className),
  href: e.getAttribute('href'), text: (e.innerText || e.value || '').trim().slice(0, 80),
  focusVisible: e.matches(':focus-visible'),
  outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0, shadow: s.boxShadow !== 'none'};
"""


def active(driver: WebDriver) -> dict[str, Any] | None:
    return driver.execute_script(_ACTIVE)  # type: ignore[no-any-return]


def active_element(driver: WebDriver) -> WebElement:
    return driver.switch_to.active_element


def press(driver: WebDriver, *keys: str) -> None:
    ActionChains(driver).send_keys(*keys).perform()


def tab_to(driver: WebDriver, matches: Callable[[WebElement], bool], what: str, limit: int = 60) -> WebElement:
    """Press TAB until the focused element ``matches``; every stop must move the focus and show it."""
    seen: list[str] = []
    previous = active_element(driver).id
    for _ in range(limit):
        press(driver, Keys.TAB)
        now = active(driver)
        assert now is not None, f"TAB left the page (focus on nothing) after {seen}"
        element = active_element(driver)
        assert element.id != previous, f"TAB did not move the focus from {now}"
        assert now["outline"] or now["shadow"], f"the focused element shows no focus indicator: {now}"
        seen.append(f"{now['tag']}#{now['id']}.{now['classes']}:{now['text'][:30]!r}")
        try:
            if matches(element):
                return element
        except StaleElementReferenceException:
            pass
        previous = element.id
    raise AssertionError(f"{what} not reached with {limit} TABs; the focus went through: {seen}")


# --- the demo's NIST study and the pages that lead to it ---------------------------------------------


def nist_series() -> dict[str, int]:
    """The NIST study's series (Hospital A's demo study of IDS-AD002-a): instances per Series Instance UID."""
    import pydicom

    from demo.studies import NIST_STUDY_DIR

    series: dict[str, int] = {}
    for path in sorted(NIST_STUDY_DIR.iterdir()):
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
        series[uid] = series.get(uid, 0) + 1
    return series


def source_section(driver: WebDriver, hospital: str) -> WebElement:
    """The patient page's section.source of ``hospital`` ("Hospital A"), by its h2."""
    sections = driver.find_elements(By.CSS_SELECTOR, "section.source")
    headings = [s.find_element(By.TAG_NAME, "h2").text for s in sections]
    found = [s for s, h in zip(sections, headings, strict=True) if hospital in h]
    assert found, f"no section.source with an h2 naming {hospital}; the sections' h2: {headings}"
    return found[0]


def search_patient(driver: WebDriver, base_url: str, patient_id: str) -> None:
    """The patients page, ``patient_id`` typed into input#pid, the form submitted; waits for the results."""
    from django.urls import reverse

    driver.get(base_url + reverse("portal:patients"))
    field = driver.find_element(By.CSS_SELECTOR, "form#patient-search input#pid")
    field.clear()
    field.send_keys(patient_id, Keys.ENTER)
    wait(driver).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table#patients-results a.patient-link"))


def open_patient(driver: WebDriver, patient_id: str) -> None:
    """From the search results, the patient's link (a.patient-link naming ``patient_id``)."""
    links = driver.find_elements(By.CSS_SELECTOR, "table#patients-results a.patient-link")
    named = [link for link in links if patient_id in link.text]
    assert named, f"no a.patient-link names {patient_id}: {[link.text for link in links]}"
    named[0].click()
    wait(driver).until(lambda d: patient_id in d.find_element(By.TAG_NAME, "h1").text)


def open_manifest_of(driver: WebDriver, hospital: str) -> None:
    """From the patient page, the first a.manifest-link of ``hospital``'s section; waits for the manifest."""
    links = source_section(driver, hospital).find_elements(By.CSS_SELECTOR, "a.manifest-link")
    assert links, f"{hospital}'s section.source has no a.manifest-link"
    links[0].click()
    wait(driver).until(lambda d: "/manifests/" in d.current_url and d.find_elements(By.TAG_NAME, "h1"))


def open_hospital_a_manifest(driver: WebDriver, base_url: str, patient_id: str) -> None:
    search_patient(driver, base_url, patient_id)
    open_patient(driver, patient_id)
    open_manifest_of(driver, "Hospital A")
