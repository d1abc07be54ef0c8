"""The demo page at GET /, driven in headless Chromium against the real server."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.actions.interaction import POINTER_TOUCH
from selenium.webdriver.common.actions.pointer_input import PointerInput
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from service.routes.demo import SECURITY_HEADERS
from tests.conftest import ROOT, missing, start_server

pytestmark = pytest.mark.slow  # a browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)
AIRLINE_PASSENGERS = [  # the page's first built-in example, from R's datasets package
    112, 118, 132, 129, 121, 135, 148, 148, 136, 119, 104, 118, 115, 126, 141, 135, 125, 149, 170, 170, 158, 133,
    114, 140, 145, 150, 178, 163, 172, 178, 199, 199, 184, 162, 146, 166, 171, 180, 193, 181, 183, 218, 230, 242,
    209, 191, 172, 194, 196, 196, 236, 235, 229, 243, 264, 272, 237, 211, 180, 201, 204, 188, 235, 227, 234, 264,
    302, 293, 259, 229, 203, 229, 242, 233, 267, 269, 270, 315, 364, 347, 312, 274, 237, 278, 284, 277, 317, 313,
    318, 374, 413, 405, 355, 306, 271, 306, 315, 301, 356, 348, 355, 422, 465, 467, 404, 347, 305, 336, 340, 318,
    362, 348, 363, 435, 491, 505, 404, 359, 310, 337, 360, 342, 406, 396, 420, 472, 548, 559, 463, 407, 362, 405,
    417, 391, 419, 461, 472, 535, 622, 606, 508, 461, 390, 432,
]
# A seven as MNIST writes it, in offsets from the canvas centre (CSS pixels of a 280-pixel canvas).
SEVEN = [(-70, -85), (-20, -85), (30, -85), (75, -85), (55, -40), (35, 5), (15, 50), (0, 95)]


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("ORTSERVE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.is_file():
            missing(f"{binary} is not installed (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser, server):
    """The page freshly loaded, its first forecast (of the default example) answered."""
    browser.get(server.url + "/")
    panel = browser.find_element(By.ID, "forecast-panel")
    WebDriverWait(browser, 30).until(lambda _: panel.get_attribute("data-state") in ("done", "error"))
    return browser


def wait_for(driver, panel: str, state: str = "done", timeout: float = 30):
    element = driver.find_element(By.ID, f"{panel}-panel")
    WebDriverWait(driver, timeout).until(lambda _: element.get_attribute("data-state") in (state, "error"))
    if element.get_attribute("data-state") != state:
        error = driver.find_element(By.ID, f"{panel}-error").text
        pytest.fail(f"{panel} panel ended in state {element.get_attribute('data-state')!r}: {error}")


def console_problems(driver, allowed: tuple[str, ...] = ()) -> list[str]:
    """Errors, warnings and CSP reports the browser logged since it was last asked, less the expected."""
    entries = driver.get_log("browser")
    return [
        entry["message"]
        for entry in entries
        if (entry["level"] in ("SEVERE", "WARNING") or "Content Security Policy" in entry["message"])
        and not any(text in entry["message"] for text in allowed)
    ]


def screenshot(driver, folder: Path, name: str) -> Path:
    """A PNG of the whole page, beyond the viewport."""
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    path = folder / f"demo-{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def draw_seven(driver) -> None:
    canvas = driver.find_element(By.ID, "digit-canvas")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    (x, y), rest = SEVEN[0], SEVEN[1:]
    actions = ActionChains(driver).move_to_element_with_offset(canvas, x, y).click_and_hold()
    for next_x, next_y in rest:
        actions.move_by_offset(next_x - x, next_y - y)
        x, y = next_x, next_y
    actions.release().perform()


def analyse(driver, text: str) -> str:
    box = driver.find_element(By.ID, "sentiment-text")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "sentiment-submit").click()
    wait_for(driver, "sentiment")
    return driver.find_element(By.ID, "sentiment-label").text


def forecast(driver, example: str | None, horizon: int, series: str | None = None) -> None:
    if example is not None:
        Select(driver.find_element(By.ID, "forecast-example")).select_by_value(example)
    if series is not None:
        box = driver.find_element(By.ID, "forecast-series")
        box.clear()
        box.send_keys(series)
    field = driver.find_element(By.ID, "forecast-horizon")
    field.clear()
    field.send_keys(str(horizon))
    driver.find_element(By.ID, "forecast-submit").click()


def bars(driver, panel: str) -> list[tuple[str, float]]:
    shown = []
    for item in driver.find_elements(By.CSS_SELECTOR, f"#{panel}-bars .bar"):
        percent = item.find_element(By.CLASS_NAME, "bar-value").text.rstrip("%")
        shown.append((item.find_element(By.CLASS_NAME, "bar-label").text, float(percent)))
    return shown


def path_points(d: str) -> list[tuple[float, float]]:
    commands = re.findall(r"([ML])\s*(-?[\d.]+),(-?[\d.]+)", d)
    assert commands and commands[0][0] == "M" and all(c == "L" for c, _, _ in commands[1:]), d
    return [(float(x), float(y)) for _, x, y in commands]


# ---- the page as served ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/static/demo/demo.js", "/static/demo/demo.css"])
def test_security_headers(client, path):
    response = client.get(path)
    assert response.status_code == 200
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    policy = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert policy["frame-ancestors"] == "'none'"


def test_content_types_and_no_inline_code(client):
    html = client.get("/")
    assert html.headers["content-type"].startswith("text/html")
    assert client.get("/static/demo/demo.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/demo/demo.css").headers["content-type"].startswith("text/css")
    scripts = re.findall(r"<script\b[^>]*>", html.text)
    assert scripts and all("src=" in tag for tag in scripts)
    assert "<style" not in html.text and not re.search(r"\sstyle\s*=", html.text)
    assert not re.search(r"\son[a-z]+\s*=", html.text)  # no inline event handlers either


def test_page_stays_out_of_the_api_schema(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(path.startswith("/static") for path in paths)


def test_unknown_asset_is_a_json_404(client):
    response = client.get("/static/demo/index.py")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# ---- the page in the browser ----------------------------------------------------------------------


def test_page_loads_clean(page, artifacts):
    assert page.title == "ortserve demo"
    wait_for(page, "forecast")
    assert page.find_element(By.ID, "forecast-horizon").get_attribute("max") == "24"  # read from /models
    screenshot(page, artifacts, "loaded")
    assert console_problems(page) == []


def test_csp_blocks_inline_script(page):
    """The policy is enforced, and a violation does reach the log this module reads."""
    assert console_problems(page) == []
    page.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.inlineRan = true;';"
        "document.body.append(s);"
    )
    assert page.execute_script("return window.inlineRan === undefined")
    problems = console_problems(page)
    assert problems and all("Content Security Policy" in message for message in problems)


def test_drawn_seven_reads_seven(page, real_repository, artifacts):
    draw_seven(page)  # classified when the pen lifts
    wait_for(page, "digit")
    screenshot(page, artifacts, "digit")
    assert page.find_element(By.ID, "digit-label").text == "7"
    top = bars(page, "digit")
    assert len(top) == 3 and top[0][0] == "7"
    assert top[0][1] >= top[1][1] >= top[2][1]
    assert console_problems(page) == []


def test_touch_stroke_draws_a_one(page, real_repository, artifacts):
    canvas = page.find_element(By.ID, "digit-canvas")
    page.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    finger = PointerInput(POINTER_TOUCH, "finger")
    actions = ActionBuilder(page, mouse=finger)
    actions.pointer_action.move_to(canvas, 5, -95).pointer_down()
    for y in range(-60, 100, 35):
        actions.pointer_action.move_to(canvas, 0, y)
    actions.pointer_action.pointer_up()
    actions.perform()
    wait_for(page, "digit")
    screenshot(page, artifacts, "digit-touch")
    assert page.find_element(By.ID, "digit-label").text == "1"
    assert console_problems(page) == []


@pytest.mark.parametrize(
    "text, label",
    [
        ("I absolutely love this, it is wonderful and made my day!", "positive"),
        ("This is awful. I hate it and it ruined my whole evening.", "negative"),
    ],
)
def test_sentiment_shows_label_and_three_probabilities(page, real_repository, artifacts, text, label):
    assert analyse(page, text) == label
    screenshot(page, artifacts, f"sentiment-{label}")
    shown = bars(page, "sentiment")
    assert [name for name, _ in shown] == ["negative", "neutral", "positive"]
    assert sum(value for _, value in shown) == pytest.approx(100, abs=0.2)
    assert max(shown, key=lambda bar: bar[1])[0] == label
    assert console_problems(page) == []


def test_forecast_is_plotted(page, server, artifacts):
    horizon = 7
    forecast(page, "air-passengers", horizon)
    wait_for(page, "forecast")
    screenshot(page, artifacts, "forecast")

    history = path_points(page.find_element(By.ID, "history-path").get_attribute("d"))
    ahead = path_points(page.find_element(By.ID, "forecast-path").get_attribute("d"))
    assert len(history) == len(AIRLINE_PASSENGERS) and len(ahead) == horizon
    assert ahead[0][0] > history[-1][0]  # the forecast continues to the right of the history
    dots = page.find_elements(By.CSS_SELECTOR, "#forecast-chart .forecast-point")
    plotted = [float(dot.get_attribute("data-value")) for dot in dots]

    with httpx.Client(base_url=server.url, timeout=60) as client:
        expected = client.post("/predict-sequence", json={"series": AIRLINE_PASSENGERS, "horizon": horizon}).json()
    assert plotted == pytest.approx(expected["forecast"], rel=1e-6)
    # higher values sit higher on the chart (smaller SVG y)
    order_by_value = sorted(range(horizon), key=lambda i: plotted[i])
    order_by_height = sorted(range(horizon), key=lambda i: -ahead[i][1])
    assert order_by_value == order_by_height
    assert f"seasonal period {expected['period']}" in page.find_element(By.ID, "forecast-summary").text
    assert console_problems(page) == []


def test_api_errors_read_clearly(page, artifacts):
    forecast(page, None, 4, series="310, 337, 360")
    wait_for(page, "forecast", state="error")
    message = page.find_element(By.ID, "forecast-error").text
    assert message.startswith("422 invalid_input:") and "series" in message
    assert page.find_elements(By.CSS_SELECTOR, "#forecast-chart *") == []  # no older chart beside the error

    forecast(page, None, 4, series="310, 337, lots")
    wait_for(page, "forecast", state="error")
    assert page.find_element(By.ID, "forecast-error").text == '"lots" is not a number'

    forecast(page, "nile", 99)
    wait_for(page, "forecast", state="error")
    assert "horizon" in page.find_element(By.ID, "forecast-error").text

    box = page.find_element(By.ID, "sentiment-text")
    box.clear()
    page.find_element(By.ID, "sentiment-submit").click()
    wait_for(page, "sentiment", state="error")
    assert page.find_element(By.ID, "sentiment-error").text.startswith("422 invalid_input:")

    page.find_element(By.ID, "digit-classify").click()  # nothing drawn yet
    wait_for(page, "digit", state="error")
    assert page.find_element(By.ID, "digit-error").text.startswith("422 invalid_input:")
    screenshot(page, artifacts, "errors")
    # the browser reports each refused request; nothing else may appear
    assert console_problems(page, allowed=("the server responded with a status of 422",)) == []


def test_whole_page_in_use(page, real_repository, artifacts):
    """One screenshot with every panel answered: the picture in the README."""
    draw_seven(page)
    wait_for(page, "digit")
    analyse(page, "The staff were friendly and the food was wonderful.")
    forecast(page, "air-passengers", 12)
    wait_for(page, "forecast")
    path = screenshot(page, artifacts, "page")
    assert path.stat().st_size > 20_000
    assert console_problems(page) == []


def test_page_on_a_server_with_api_keys(browser, api_repository, tmp_path, artifacts):
    """The page and its files stay open; its calls carry the key typed into the page."""
    key = "demo-page-test-key"
    with start_server(api_repository, tmp_path / "server.log", env={"ORTSERVE_API_KEYS": json.dumps([key])}) as keyed:
        with keyed.client() as client:
            for path in ("/", "/static/demo/demo.js", "/static/demo/demo.css"):
                assert client.get(path).status_code == 200, path
            assert client.post("/sentiment", json={"text": "fine"}).status_code == 401
        browser.get(keyed.url + "/")
        wait_for(browser, "forecast", state="error")  # the first forecast went without a key
        message = browser.find_element(By.ID, "forecast-error").text
        assert message.startswith("401 unauthorized:") and "API key field" in message

        browser.find_element(By.ID, "api-key").send_keys(key)
        browser.find_element(By.ID, "forecast-submit").click()
        wait_for(browser, "forecast")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#forecast-chart .forecast-point")) == 12
        screenshot(browser, artifacts, "api-key")
        assert console_problems(browser, allowed=("the server responded with a status of 401",)) == []
