"""The page in a real browser: headless Debian chromium, driven by Selenium over chromedriver.

The service behind it is real too: moto over HTTP, a web process, and the scaler starting worker
processes (RUNNER=process) from an empty fleet. The browser uploads a real photo and reads its
label, then watches the dashboard while a burst of uploads makes the scaler grow the fleet.
Screenshots land in test-artifacts/ (gitignored).

Needs: apt-get install -y chromium chromium-driver; pip install selenium. Without them the
browser tests skip; the page's own tests (served, offline, POST / unchanged) always run.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import falcon.testing
import pytest

from embedded.stack import python_module, wait_http
from runtime.messages import Result
from runtime.settings import Settings
from tests.conftest import IMAGES, ROOT, Service, free_port, photo_labels
from tests.http_client import upload, variants
from web.app import create_app

try:
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
except ImportError:  # the page's own tests below still run
    webdriver = None

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = ROOT / "test-artifacts"
FLEET_MAX = 2


class FakeGateway:
    def classify(self, upload, request_id=None):
        return Result(id="c" * 32, filename=upload.filename, label="tabby"), {"total": 1.0}

    def result(self, request_id):
        return None


@pytest.fixture
def page_client() -> falcon.testing.TestClient:
    app = create_app(Settings(), gateway=FakeGateway(), ready=lambda: None, status=lambda: {})
    return falcon.testing.TestClient(app)


def test_get_root_serves_the_page_under_a_strict_content_policy(page_client):
    response = page_client.simulate_get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    # Offline: every asset the page names is on this server.
    assets = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert assets and all(a.startswith("/static/") for a in assets), assets
    for asset in assets:
        served = page_client.simulate_get(asset)
        assert served.status_code == 200, asset
        text = served.text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a URL
        assert "http://" not in text and "https://" not in text, asset


def test_post_root_is_still_the_upload_endpoint(page_client):
    boundary = "b0undary"
    data = (IMAGES / "chelsea.jpg").read_bytes()
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="inputFile"; '
            f'filename="chelsea.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = page_client.simulate_post(
        "/", body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 200 and response.text == "chelsea:tabby"
    rejected = page_client.simulate_post("/", body=b"x", headers={"Content-Type": "text/plain"})
    assert rejected.status_code == 400  # the upload's own validation ran


def wait_until(predicate, what: str, timeout_s: float = 120.0, every_s: float = 0.2):
    """Poll until predicate() is truthy and return it; the timeout only stops a broken test."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if webdriver is None:
        pytest.skip("selenium is not installed: pip install selenium")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no browser: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    # An explicit driver path: Selenium Manager (which would download drivers) never runs.
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    ARTIFACTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def elastic(moto_endpoint, tmp_path_factory):
    """A web process and the scaler with local worker processes, from an empty fleet."""
    name = f"ui{uuid.uuid4().hex[:8]}"
    status_port = free_port()
    service = Service(
        moto_endpoint,
        tmp_path_factory.mktemp(name),
        name,
        RUNNER="process",
        FLEET_NAME=f"{name}-fleet",
        LAUNCH_TEMPLATE=f"{name}-lt",
        FLEET_MAX=str(FLEET_MAX),
        SCALER_TICK_S="0.5",
        SCALER_STATUS_PORT=str(status_port),
        SCALER_STATUS_URL=f"http://127.0.0.1:{status_port}/status",
        QUIET_PERIOD_S="120",  # no scale-in while the test watches
        DEFAULT_THROUGHPUT_IMG_S="1",
        LATENCY_TARGET_S="2",  # two queued images per worker: a small burst asks for the max
        TORCH_THREADS="1",  # two workers share two cores
    )
    service.provision()
    scaler = service.stack.start("scaler", python_module("scaler"))
    wait_http(f"http://127.0.0.1:{status_port}/status", 60, scaler)
    service.start_web()
    yield service
    service.stop()


def tile(browser, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def running(browser) -> int | None:
    text = tile(browser, "fleet-running")
    return int(text) if text.isdigit() else None


def test_upload_a_photo_and_see_its_label_and_top5(browser, elastic):
    browser.get(elastic.webs[0])
    wait_until(lambda: tile(browser, "connection") == "live", "the dashboard to go live", 30)
    assert running(browser) == 0  # nothing runs before the first upload
    name = "chelsea.jpg"
    browser.find_element(By.ID, "files").send_keys(str(IMAGES / name))
    card = wait_until(
        lambda: browser.find_elements(By.CSS_SELECTOR, ".card[data-state]"), "the answer"
    )[0]
    assert card.get_attribute("data-state") == "done", card.text
    assert card.find_element(By.CSS_SELECTOR, "h3").text == name
    label = card.find_element(By.CSS_SELECTOR, ".label").text
    assert label in photo_labels()[name]
    rows = card.find_elements(By.CSS_SELECTOR, ".top5 li")
    assert len(rows) == 5
    assert rows[0].find_element(By.CSS_SELECTOR, ".name").text == label
    scores = [float(r.find_element(By.CSS_SELECTOR, ".score").text.rstrip("%")) for r in rows]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 100
    browser.save_screenshot(str(ARTIFACTS / "upload.png"))


def test_dashboard_shows_the_fleet_grow_during_a_burst(browser, elastic):
    browser.get(elastic.webs[0])
    wait_until(lambda: running(browser) is not None, "the fleet count")
    before = running(browser)
    assert before < FLEET_MAX
    images = variants(30)
    seen_running, seen_queued = {before}, set()
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        answers = [pool.submit(upload, elastic.webs[0], data, name) for name, data in images]

        def grown() -> bool:
            now_running = running(browser)
            # The backlog: waiting plus taken by a worker (a running worker empties "waiting").
            counts = [tile(browser, "queue-visible"), tile(browser, "queue-in-flight")]
            seen_running.add(now_running)
            seen_queued.add(
                sum(int(c) for c in counts) if all(c.isdigit() for c in counts) else None
            )
            return now_running == FLEET_MAX

        wait_until(grown, f"the dashboard to show {FLEET_MAX} running workers", 180, 0.25)
        time.sleep(3)  # a few more samples on the chart before the picture
        browser.save_screenshot(str(ARTIFACTS / "dashboard-burst.png"))
        statuses = [answer.result().status_code for answer in answers]
    assert statuses == [200] * len(images)
    assert FLEET_MAX in seen_running and before in seen_running
    assert max(q for q in seen_queued if q is not None) > 0  # the backlog showed up too
    decisions = browser.find_elements(By.CSS_SELECTOR, "#decisions li")
    assert decisions and "desired=" in decisions[0].text  # the scaler's newest decision


def test_readable_at_phone_width_and_usable_by_keyboard(browser, elastic):
    browser.set_window_size(390, 844)
    try:
        browser.get(elastic.webs[0])
        wait_until(lambda: tile(browser, "connection") == "live", "the dashboard to go live", 30)
        width = browser.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert width[0] <= width[1], f"page scrolls sideways at phone width: {width}"
        for control in browser.find_elements(By.CSS_SELECTOR, "input"):
            control_id = control.get_attribute("id")
            assert browser.find_elements(By.CSS_SELECTOR, f"label[for='{control_id}']"), control_id
        ActionChains(browser).send_keys(Keys.TAB).perform()
        focused = browser.switch_to.active_element
        assert focused.get_attribute("id") == "files"  # the first stop is the file picker
        browser.save_screenshot(str(ARTIFACTS / "phone.png"))
    finally:
        browser.set_window_size(1400, 1000)


def test_a_folder_goes_as_one_job_and_its_progress_shows(browser, elastic, tmp_path):
    folder = tmp_path / "album"
    folder.mkdir()
    for name in photo_labels():
        shutil.copy(IMAGES / name, folder / name)
    (folder / "readme.txt").write_text("not an image: the page leaves it out")
    browser.get(elastic.webs[0])
    wait_until(lambda: tile(browser, "connection") == "live", "the dashboard to go live", 30)
    browser.find_element(By.ID, "folder").send_keys(str(folder))
    status = browser.find_element(By.ID, "job-status")
    wait_until(lambda: status.text.startswith("Done"), "the job to finish", 300)
    assert status.text == f"Done: {len(photo_labels())} classified, 0 failed."
    progress = browser.find_element(By.ID, "job-progress")
    assert (
        progress.get_attribute("value") == progress.get_attribute("max") == str(len(photo_labels()))
    )
    link = wait_until(
        lambda: (
            browser.find_element(By.ID, "job-csv").is_displayed()
            and browser.find_element(By.ID, "job-csv")
        ),
        "the CSV link",
    )
    assert link.get_attribute("href").startswith("blob:")
    browser.save_screenshot(str(ARTIFACTS / "job.png"))
