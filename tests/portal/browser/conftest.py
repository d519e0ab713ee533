"""Fixtures of the browser tests: one demo affinity domain for the package, one Chromium per module.

The demo is ``make run``'s (``config.supervisor``, XDS_DEMO=true; tests/demo_process.py) on free ports with a known
``DEMO_PASSWORD``; the browser is Debian's Chromium through chromium-driver, headless, fresh profile.
Screenshots land in ``<VAR_DIR>/artifacts/screenshots`` (CI keeps them); a failing test leaves one of the
page it failed on there too (``FAILED-<test>.png``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from selenium.webdriver.chrome.webdriver import WebDriver

from tests.demo_process import Demo, running_demo
from tests.portal.browser import support
from tests.portal.browser.support import DEMO_PASSWORD


@pytest.fixture(scope="package")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The two-hospital demo, started once for every browser test (torn down after the package)."""
    support.axe_source()  # no axe-core: fail before spending the demo's start-up
    with running_demo(tmp_path_factory.mktemp("browser-demo") / "var", "browser",
                      {"DEMO_PASSWORD": DEMO_PASSWORD}) as running:
        yield running


@pytest.fixture(scope="package")
def screenshot_dir() -> Path:
    """``<VAR_DIR>/artifacts/screenshots``, emptied once per run so that it shows this run's pages only."""
    directory = Path(settings.VAR_DIR) / "artifacts" / "screenshots"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory, downloads: Path) -> Iterator[WebDriver]:
    browser = support.chromium(tmp_path_factory.mktemp("chromium") / "profile", downloads)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def shot(screenshot_dir: Path) -> Callable[[WebDriver, str], Path]:
    """``shot(driver, "01-login")``: the page now shown, saved as ``<screenshots>/01-login.png``."""
    return lambda browser, name: support.shot(browser, screenshot_dir, name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    browser = getattr(item, "funcargs", {}).get("driver")
    if report.when == "call" and report.failed and browser is not None:
        directory = Path(settings.VAR_DIR) / "artifacts" / "screenshots"
        try:
            support.shot(browser, directory, re.sub(r"[^\w.-]+", "-", f"FAILED-{item.name}")[:120])
        except Exception:  # noqa: BLE001 - a broken browser must not hide the test's own failure
            pass
    return report
