"""The page in a real browser: headless Debian chromium, driven by Selenium over chromedriver.

The service behind it is real too: moto over HTTP, a web process, and the scaler starting worker
processes (RUNNER=process) from an empty fleet, with the result cache off. The browser uploads a
real photo and reads its label, then watches the dashboard through a burst: the workers show as
starting while their model loads, the scale-out decision reads as a sentence, stopped instances
are drawn apart from running ones after scale-in, and a reload keeps the history. Screenshots of
the dashboard at desktop and phone width go to test-artifacts/, or to docs/ (the README's
pictures) with UPDATE_SCREENSHOTS=1, so an ordinary test run leaves the tree clean.

Needs: apt-get install -y chromium chromium-driver; pip install selenium. Without them the
browser tests skip; the page's own tests (served, offline, POST / unchanged) always run.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import falcon.testing
import pytest

from embedded.stack import python_module, wait_http
from runtime.settings import Settings
from tests.conftest import IMAGES, ROOT, Service, free_port, photo_labels
from tests.http_client import upload, variants
from tests.support.fake_gateway import FakeGateway
from tests.support.multipart import form
from tests.support.waiting import wait_until
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
PICTURES = ROOT / "docs" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else ARTIFACTS
FLEET_MAX = 2


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
    # Offline: every address the page names is on this server (links too), and every asset it
    # loads, with the modules its script imports, is served.
    addresses = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert all(a.startswith(("/", "#")) and not a.startswith("//") for a in addresses), addresses
    assets = [a for a in addresses if a.startswith("/static/")]
    assert "/static/app.js" in assets
    imported = re.findall(r'from "\./([\w.]+)"', page_client.simulate_get("/static/app.js").text)
    assets += [f"/static/{module}" for module in imported]
    assert len(imported) >= 2, imported
    for asset in assets:
        served = page_client.simulate_get(asset)
        assert served.status_code == 200, asset
        text = served.text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a URL
        assert "http://" not in text and "https://" not in text, asset


def test_post_root_is_still_the_upload_endpoint(page_client):
    body, headers = form({"inputFile": ("chelsea.jpg", (IMAGES / "chelsea.jpg").read_bytes())})
    response = page_client.simulate_post("/", body=body, headers=headers)
    assert response.status_code == 200 and response.text == "chelsea:tabby"
    rejected = page_client.simulate_post("/", body=b"x", headers={"Content-Type": "text/plain"})
    assert rejected.status_code == 400  # the upload's own validation ran


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
        POLICY="target",  # the rule with a quiet period and a per-worker backlog target
        QUIET_PERIOD_S="8",  # scale-in soon after the burst, so the test sees it
        DEFAULT_THROUGHPUT_IMG_S="1",
        LATENCY_TARGET_S="2",  # two queued images per worker: a small burst asks for the max
        TORCH_THREADS="1",  # two workers share two cores
        RESULT_CACHE="false",  # every upload reaches a worker
    )
    service.provision()
    scaler = service.stack.start("scaler", python_module("scaler"))
    wait_http(f"http://127.0.0.1:{status_port}/status", 60, scaler)
    service.start_web()
    yield service
    service.stop()


def tile(browser, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def number(browser, element_id: str) -> int | None:
    text = tile(browser, element_id)
    return int(text) if text.isdigit() else None


def decision_list(browser) -> list[dict]:
    """The decisions as shown, read in one go (the list is redrawn as decisions arrive)."""
    return browser.execute_script(
        """return [...document.querySelectorAll("#decisions li")].map((li) => ({
            acted: li.classList.contains("acted"),
            sentence: li.querySelector(".sentence")?.textContent ?? li.textContent,
            summary: li.querySelector("summary")?.textContent ?? "",
            open: Boolean(li.querySelector("details")?.open),
            raw: li.querySelector("details code")?.textContent ?? "",
        }));"""
    )


def open_page(browser, url: str) -> None:
    browser.get(url)
    wait_until(lambda: tile(browser, "connection") == "live", "the dashboard to go live", 30)


# Counts the fleet chart's pixels of each state's colour in a band of columns (CSS pixels from
# the right edge): what a person sees there, read from the canvas itself.
CHART_COLOURS = """
const canvas = document.getElementById("fleet-chart");
const [fromRight, toRight] = [arguments[0], arguments[1] ?? canvas.clientWidth];
const ratio = canvas.width / canvas.clientWidth;
const css = getComputedStyle(document.documentElement);
const rgb = (name) => {
  const probe = document.createElement("canvas").getContext("2d");
  probe.fillStyle = css.getPropertyValue(`--${name}`).trim();
  const hex = probe.fillStyle.slice(1);
  return [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
};
const names = ["ready", "starting", "pending", "stopping", "stopped"];
const targets = names.map(rgb);
const x0 = Math.round(canvas.width - toRight * ratio);
const width = Math.round((toRight - fromRight) * ratio);
const data = canvas.getContext("2d").getImageData(x0, 0, width, canvas.height).data;
const counts = Object.fromEntries(names.map((n) => [n, 0]));
for (let i = 0; i < data.length; i += 4) {
  targets.forEach((t, k) => {
    const distance = [0, 1, 2].reduce((sum, c) => sum + Math.abs(data[i + c] - t[c]), 0);
    if (distance < 30) counts[names[k]] += 1;
  });
}
return counts;
"""


def test_upload_a_photo_and_see_its_label_top5_and_where_it_came_from(browser, elastic):
    open_page(browser, elastic.webs[0])
    assert number(browser, "fleet-running") == 0  # nothing runs before the first upload
    # Nothing measured yet on this fleet: the scaler plans with the defaults, and says so.
    wait_until(
        lambda: tile(browser, "estimate-boot-new-source") == "default, until measured",
        "the default boot time on the page",
        30,
    )
    assert tile(browser, "estimate-boot-new") == "40.0 s"  # EXPECTED_BOOT_NEW_S's default
    assert tile(browser, "estimate-throughput") == "1.0 img/s"  # this fixture's default
    assert tile(browser, "estimate-throughput-source") == "default, until measured"
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
    # Where the answer came from: its time (a cold fleet: it waited for a worker start), the
    # worker instance, the model, and a link to the stored result.
    facts = card.find_element(By.CSS_SELECTOR, ".facts").text
    assert re.match(r"^\d+(\.\d)? m?s · included a worker start · worker i-[0-9a-f]+ · ", facts)
    assert "efficientnet_lite0" in facts
    link = card.find_element(By.LINK_TEXT, "result JSON").get_attribute("href")
    assert re.search(r"/results/[0-9a-f]{32}$", link)
    assert tile(browser, "about-model") == "efficientnet_lite0 (ImageNet, 1000 classes)"

    # A file that is no image: the server's reason, and no broken preview.
    text_file = ARTIFACTS / "notes.txt"
    text_file.write_text("not an image\n")
    browser.find_element(By.ID, "files").send_keys(str(text_file))
    rejected = wait_until(
        lambda: browser.find_elements(By.CSS_SELECTOR, ".card[data-state='error']"), "the refusal"
    )[0]
    assert rejected.find_element(By.CSS_SELECTOR, ".label").text.startswith("415: ")
    assert not rejected.find_elements(By.CSS_SELECTOR, "img")
    browser.save_screenshot(str(ARTIFACTS / "upload.png"))


def test_dashboard_explains_a_burst_scale_out_scale_in_and_keeps_history(browser, elastic):
    open_page(browser, elastic.webs[0])
    wait_until(lambda: number(browser, "fleet-running") == 0, "the fleet to be idle", 180)
    # Enough that one worker cannot clear them before the scaler adds the second (the model
    # runs in about 7 ms an image on onnxruntime).
    images = variants(200)
    seen = {"starting": 0, "capacity": 0, "waiting": 0}
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        answers = [pool.submit(upload, elastic.webs[0], data, name) for name, data in images]

        def grown() -> bool:
            starting, ready = number(browser, "fleet-starting"), number(browser, "fleet-running")
            waiting = number(browser, "queue-visible") or 0
            seen["starting"] = max(seen["starting"], starting or 0)
            seen["capacity"] = max(seen["capacity"], (starting or 0) + (ready or 0))
            seen["waiting"] = max(
                seen["waiting"], waiting + (number(browser, "queue-in-flight") or 0)
            )
            return seen["starting"] > 0 and seen["capacity"] == FLEET_MAX

        wait_until(grown, f"{FLEET_MAX} workers, shown as starting while they load", 180, 0.25)
        # Each running worker is listed with the model version it serves once it has loaded.
        serving = re.compile(r"^i-[0-9a-f]+: efficientnet_lite0 [0-9a-zA-Z]+$")
        wait_until(
            lambda: any(serving.match(line) for line in tile(browser, "workers").splitlines()),
            "a worker's model version in the list of workers",
            60,
            0.25,
        )
        # The rate is measured within the burst, from the running workers' usage tags.
        wait_until(
            lambda: re.match(
                r"^measured now, [12] workers?$", tile(browser, "estimate-throughput-source")
            ),
            "the workers' rate measured within the burst",
            60,
            0.25,
        )
        time.sleep(2)  # a few more samples on the chart before the picture
        browser.save_screenshot(str(PICTURES / "dashboard.png"))
        statuses = [answer.result().status_code for answer in answers]
    assert statuses == [200] * len(images)
    assert seen["waiting"] > 0  # the backlog showed up too

    # The scale-out, as a sentence; its raw inputs behind a disclosure.
    # (Uploads arrive over a tick or two: the fleet may go 0 -> 1 -> 2 or straight to 2.)
    scale_out = re.compile(rf"^Scaled out \d → {FLEET_MAX}( \(the maximum\))?: \d+ waiting")
    shown = []

    def to_the_maximum():
        shown[:] = decision_list(browser)
        return [d for d in shown if scale_out.match(d["sentence"])]

    decision = wait_until(to_the_maximum, f"the scale-out decision among {shown}", 30)[0]
    words = decision["sentence"]
    assert decision["acted"], decision
    # The cap is named exactly when the load asked for more than the maximum.
    asked = int(re.search(r"raw=(\d+)", decision["raw"]).group(1))
    assert words.endswith(f"capped at the maximum {FLEET_MAX}.") == (asked > FLEET_MAX), decision
    assert decision["summary"] == "inputs" and not decision["open"]  # behind the disclosure
    assert "launch=" in decision["raw"]

    # Scale-in: nothing runs, the instances wait stopped, and the chart does not draw them as
    # a block like running ones (only a dotted outline), since they cost nothing.
    def scaled_in() -> bool:
        idle = number(browser, "fleet-running") == 0 and number(browser, "fleet-starting") == 0
        return idle and number(browser, "fleet-pending") == 0 and number(browser, "fleet-stopped")

    wait_until(scaled_in, "scale-in to stopped instances", 180)
    # The burst's launches were measured: the page shows the boot the scaler now plans with.
    measured = re.compile(r"^measured( once|, median of \d+)$")
    wait_until(
        lambda: measured.match(tile(browser, "estimate-boot-new-source")),
        "a measured boot from launch on the page",
        60,
    )
    boot_s = float(tile(browser, "estimate-boot-new").removesuffix(" s"))
    assert 0 < boot_s < 40.0, boot_s  # a local worker is ready well before the 40 s default
    # With no worker running, the burst's rate is what the scaler remembers for the next one.
    wait_until(
        lambda: tile(browser, "estimate-throughput-source") == "remembered: last measured",
        "the burst's rate remembered once the workers stopped",
        60,
    )
    img_s = float(tile(browser, "estimate-throughput").removesuffix(" img/s"))
    assert img_s > 1.0, img_s  # not this fixture's default
    # The chart's right edge (its newest seconds) shows the same once those samples arrive.
    edge = {}

    def edge_stopped() -> bool:
        edge.update(browser.execute_script(CHART_COLOURS, 8, 24))
        return edge["stopped"] > 0 and edge["ready"] == edge["starting"] == edge["pending"] == 0

    wait_until(edge_stopped, f"only stopped instances at the chart's right edge ({edge})", 60, 1)
    decisions = [d["sentence"] for d in decision_list(browser)]
    assert any(d.startswith(f"Scaled in {FLEET_MAX} → ") for d in decisions), decisions

    # A reload keeps it all: the history comes from the server, not from the tab.
    open_page(browser, elastic.webs[0])
    decisions = wait_until(
        lambda: [d["sentence"] for d in decision_list(browser) if d["acted"]], "history"
    )
    assert any(scale_out.match(d) for d in decisions), decisions
    whole = browser.execute_script(CHART_COLOURS, 0, None)
    assert whole["ready"] + whole["starting"] > 0, whole  # the burst's workers, from history
    assert number(browser, "fleet-running") == 0
    assert int(tile(browser, "instance-seconds").replace(",", "")) > 0
    # What the burst cost: so far (by part) and per 1,000 images answered, from /status.
    wait_until(lambda: tile(browser, "cost-per-1000").startswith("$"), "the cost per 1,000", 60)
    assert float(tile(browser, "cost-per-1000").lstrip("$")) > 0
    assert float(tile(browser, "cost-total").lstrip("$")) > 0
    assert re.match(
        r"compute \$[\d.]+ · requests \$[\d.]+ · hosts \$[\d.]+$", tile(browser, "cost-parts")
    )
    browser.save_screenshot(str(PICTURES / "dashboard-after.png"))


def test_readable_at_phone_width_and_usable_by_keyboard(browser, elastic):
    browser.set_window_size(390, 844)
    try:
        open_page(browser, elastic.webs[0])
        width = browser.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        assert width[0] <= width[1], f"page scrolls sideways at phone width: {width}"
        for control in browser.find_elements(By.CSS_SELECTOR, "input"):
            control_id = control.get_attribute("id")
            assert browser.find_elements(By.CSS_SELECTOR, f"label[for='{control_id}']"), control_id
        # Charts keep a readable height at phone width (not squeezed to a strip by the width).
        for chart in ("fleet-chart", "queue-chart"):
            size = browser.find_element(By.ID, chart).size
            assert size["width"] >= 300 and size["height"] >= 140, (chart, size)
        # The first stops are the header's links, then the file picker.
        stops = []
        for _ in range(6):
            ActionChains(browser).send_keys(Keys.TAB).perform()
            focused = browser.switch_to.active_element
            stops.append(focused.get_attribute("id") or focused.text)
            if stops[-1] == "files":
                break
        assert stops[0] == "API" and stops[-1] == "files", stops
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(390, height)
        browser.save_screenshot(str(PICTURES / "dashboard-phone.png"))
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
