"""The dashboard end to end in headless Chromium (Debian's chromium and chromium-driver, Selenium)
against a real HTTPS listener on 127.0.0.1: sign in with a token, overview, inventory search,
certificate detail, revoke with a reason as operator, the audit log's chain status, findings.

Screenshots of each page go to ``test-artifacts/`` at the top of the tree (git-ignored).
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from estserver import RunningServer, https_server
from iotpki.core.access import create_token
from iotpki.core.models import CertificateQuery, CertStatus, Role
from iotpki.monitoring.service import Monitor
from iotpki.services.installation import Installation

from conftest import ManualClock, device_csr, make_installation

pytestmark = pytest.mark.interop

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
_CHROMIUM = shutil.which("chromium")
_DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if not _CHROMIUM or not _DRIVER:
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = _CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--ignore-certificate-errors",  # the listener's certificate is from the test's own CA
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=ChromeService(executable_path=_DRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Installation, dict[Role, str]]]:
    clock = ManualClock()
    inst = make_installation(tmp_path / "home", clock=clock)
    for i, name in enumerate(["pump-north-01", "pump-south-02", "valve-03", "gateway-04"]):
        inst.authority.issue(
            device_csr(name), profile="device", lifetime=timedelta(days=3 + 40 * i), actor="test"
        )
    clock.advance(timedelta(days=2, hours=12))
    Monitor(inst).scan()  # pump-north-01 has under a quarter of its life left: a finding
    tokens = {
        role: create_token(inst.store, inst.authority.clock, role=role, description="", actor="t")[
            0
        ]
        for role in (Role.OPERATOR, Role.AUDITOR)
    }
    yield inst, tokens
    inst.close()


def _shot(driver: WebDriver, name: str) -> None:
    """A screenshot of the whole page, below the fold too (Chrome DevTools protocol)."""
    ARTIFACTS.mkdir(exist_ok=True)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    (ARTIFACTS / f"dashboard-{name}.png").write_bytes(base64.b64decode(shot["data"]))


def _navigate(driver: WebDriver, element: WebElement) -> None:
    """Click what loads a new page and wait until the old one is gone."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 60).until(expected_conditions.staleness_of(page))


def _sign_in(driver: WebDriver, server: RunningServer, token: str) -> None:
    driver.get(f"{server.url}/")
    assert "/ui/login" in driver.current_url
    driver.find_element(By.ID, "token").send_keys(token)
    _navigate(driver, driver.find_element(By.ID, "signin"))


def test_operator_walks_the_dashboard(
    browser: WebDriver, fleet: tuple[Installation, dict[Role, str]]
) -> None:
    inst, tokens = fleet
    with https_server(inst) as server:
        _sign_in(browser, server, tokens[Role.OPERATOR])
        assert browser.current_url.rstrip("/") == server.url
        assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
        assert browser.find_elements(By.CSS_SELECTOR, "svg"), "the expiry chart is missing"
        _shot(browser, "overview")

        browser.get(f"{server.url}/ui/certificates")
        browser.find_element(By.ID, "q").send_keys("PUMP")
        _navigate(browser, browser.find_element(By.ID, "search"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#results tr td:nth-child(3)")
        assert sorted(r.text for r in rows) == ["CN=pump-north-01", "CN=pump-south-02"]
        _shot(browser, "inventory")

        link = browser.find_element(By.XPATH, "//tr[td[text()='CN=pump-south-02']]//a")
        serial = link.text
        _navigate(browser, link)
        assert browser.find_element(By.ID, "status").text == "valid"
        assert "urn:dev:ops:iotpki-pump-south-02" in browser.page_source
        _shot(browser, "certificate")

        Select(browser.find_element(By.ID, "reason")).select_by_visible_text("keyCompromise")
        _navigate(browser, browser.find_element(By.ID, "revoke"))
        assert browser.find_element(By.ID, "status").text.startswith("revoked (keyCompromise")
        assert not browser.find_elements(By.ID, "revoke")
        _shot(browser, "revoked")

        browser.get(f"{server.url}/ui/audit")
        chain = browser.find_element(By.ID, "chain")
        assert chain.get_attribute("class") == "ok" and "intact" in chain.text
        assert "certificate.revoked" in browser.page_source
        _shot(browser, "audit")

        browser.get(f"{server.url}/ui/findings")
        assert "cert_expiring" in browser.page_source
        _shot(browser, "findings")

        browser.get(f"{server.url}/ui/report")
        assert browser.find_element(By.TAG_NAME, "h1").text == "iotpki compliance report"
        assert len(browser.find_elements(By.CSS_SELECTOR, "svg")) >= 3
        _shot(browser, "report")

    revoked = inst.authority.search(CertificateQuery(status=CertStatus.REVOKED))
    assert [r.serial[:20] for r in revoked] == [serial]


def test_auditor_cannot_revoke_in_the_browser(
    browser: WebDriver, fleet: tuple[Installation, dict[Role, str]]
) -> None:
    inst, tokens = fleet
    with https_server(inst) as server:
        _sign_in(browser, server, tokens[Role.AUDITOR])
        browser.get(f"{server.url}/ui/certificates")
        _navigate(browser, browser.find_element(By.CSS_SELECTOR, "#results a"))
        assert not browser.find_elements(By.ID, "revoke")
        _shot(browser, "auditor-certificate")
