"""The web page at /ui, driven in a real headless Chromium over the default models.

The browser is Debian's ``chromium`` with its ``chromedriver`` (nothing downloaded); without them
the browser tests skip and say what to install. Inside ``make test``'s namespace the browser
reaches only loopback, so the page is seen working offline.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from facegraph.graph.webui import CSP
from facegraph.models.imaging import encode_jpeg
from tests.fixture_models import fixture_path

KEY = "ui-test-key"
PHOTOS = Path(__file__).resolve().parents[2].parent / "shared" / "photos"
GROUP_PHOTO = PHOTOS / "group-t1.jpg"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver && .venv/bin/pip install selenium"
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER and importlib.util.find_spec("selenium")),
    reason=f"no headless browser; install one with: {INSTALL}",
)
HOSTILE = "<img src=x onerror=alert(1)>"
WAIT_S = 90


def CONFIG(tmp_path_factory):
    # The default pack (CenterFace + dlib ResNet), the generated demo classifier so deepfake scores
    # show, a gallery of this module's own, and an API key the page must carry on every call.
    return {
        "name": "facegraph",
        "deepfake": {"model": {"family": "image-classifier", "path": fixture_path("rgb-classifier")}, "deployment": {"num_cpus": 0.25}},
        "gallery": {"database": str(tmp_path_factory.mktemp("ui-gallery") / "gallery.sqlite3")},
        "ingress": {"api_keys": [KEY]},
    }


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    """The astronaut, her turned by 8 degrees, and a file that is no picture."""
    from skimage import data

    folder = tmp_path_factory.mktemp("ui-pictures")
    astronaut = data.astronaut()
    turn = cv2.getRotationMatrix2D((256, 256), 8, 1.0)
    turned = cv2.warpAffine(astronaut, turn, (512, 512), borderMode=cv2.BORDER_REFLECT)
    files = {"astronaut": ("astronaut.jpg", encode_jpeg(astronaut, 95)), "turned": ("turned.jpg", encode_jpeg(np.ascontiguousarray(turned), 95))}
    files["not_a_picture"] = ("notes.jpg", b"these bytes are not a picture at all\n" * 4)
    out = {}
    for key, (name, content) in files.items():
        out[key] = folder / name
        out[key].write_bytes(content)
    return out


def chromium(profile: Path):
    """A headless Chromium driven through Debian's chromedriver, with its own profile folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1200",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    return driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def wait(driver, condition, timeout: float = WAIT_S):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page redraws lists as answers come in: an element may go stale between two looks.
    waiting = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    return waiting.until(lambda d: condition(d) or None)


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(driver, selector: str) -> str:
    """The first match's text, read in one step (no stale element between find and read); SVG has only textContent."""
    return driver.execute_script("const n = document.querySelector(arguments[0]); return n ? (n.innerText ?? n.textContent).trim() : '';", selector)


def open_page(driver, base: str, key: str | None = KEY) -> None:
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{base}/ui")
    if key is not None:
        css(driver, "#api-key")[0].send_keys(key + Keys.TAB)  # the key is read on change
        wait(driver, lambda d: text_of(d, "#ready") == "ready" and css(d, "#identify")[0].is_enabled())


def upload(driver, path: Path, field: str = "#pictures") -> None:
    css(driver, field)[0].send_keys(str(path))


def subject_row(driver, name: str):
    return next((row for row in css(driver, "#subject-rows tr") if row.find_element("css selector", ".subject-name").text == name), None)


def create_subject(driver, name: str, metadata: str = "") -> None:
    css(driver, "#subject-name")[0].send_keys(name)
    css(driver, "#subject-metadata")[0].send_keys(metadata)
    css(driver, "#create-subject button[type=submit]")[0].click()
    wait(driver, lambda d: subject_row(d, name))


def no_csp_violations(driver) -> None:
    logs = [entry["message"] for entry in driver.get_log("browser")]
    assert not [m for m in logs if "Content Security Policy" in m or "Refused to" in m], logs


def test_page_is_public_and_locked_down(serve_app):
    base, _ = serve_app
    for path, kind in (("/ui", "text/html"), ("/ui/ui.js", "text/javascript"), ("/ui/ui.css", "text/css")):
        r = httpx.get(f"{base}{path}", timeout=30)  # no key: the page is public, like /docs
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    for directive in ("script-src 'self'", "object-src 'none'", "frame-ancestors 'none'", "connect-src 'self'", "img-src 'self' blob: data:"):
        assert directive in CSP
    assert "unsafe" not in CSP
    # A query names no file: the fixed three are all there is.
    assert httpx.get(f"{base}/ui", params={"name": "../config.py"}, timeout=30).text == httpx.get(f"{base}/ui", timeout=30).text
    assert httpx.get(f"{base}/ui/../graph/config.py", timeout=30).status_code in (401, 404)
    # The API behind it stays guarded.
    assert httpx.get(f"{base}/v1/models", timeout=30).status_code == 401
    assert "/ui" not in httpx.get(f"{base}/openapi.json", timeout=30).json()["paths"]


@needs_browser
def test_analyze_enroll_identify_verify_delete(serve_app, browser, pictures):
    base, _ = serve_app
    driver = browser
    open_page(driver, base)
    upload(driver, pictures["astronaut"])
    wait(driver, lambda d: css(d, "#results rect.face-box"))
    assert len(css(driver, "#results rect.face-box")) == 1
    assert len(css(driver, "#results circle.landmark")) == 5  # CenterFace's five points
    assert text_of(driver, "#results text.face-label") == "#0 unknown"
    assert re.fullmatch(r"deepfake [01]\.\d\d", text_of(driver, "#results text.face-deepfake"))
    assert text_of(driver, "#results td.deepfake").split()[0] in ("real", "fake")
    timings = [dt.text for dt in css(driver, "#results dl.timings dt")]
    assert {"decode", "detect", "recognizer", "deepfake", "identify", "total"} <= set(timings), timings

    # The models panel, after the page's own analyze call went through the stages.
    css(driver, "#refresh-models")[0].click()
    wait(driver, lambda d: "1 x" in text_of(d, "#model-rows tr[data-stage=recognizer]"))
    detector = text_of(driver, "#model-rows tr[data-stage=detector]")
    assert "centerface" in detector and "CPUExecutionProvider" in detector and "fp32" in detector and "RUNNING 2" in detector
    assert "dlib-resnet" in text_of(driver, "#model-rows tr[data-stage=recognizer]")
    assert "image-classifier" in text_of(driver, "#model-rows tr[data-stage=deepfake]")
    assert "HEALTHY" in text_of(driver, "#ready-rows")

    # Enroll the face under the cursor, from the page.
    create_subject(driver, "Eileen Collins", '{"team": "STS-93"}')
    row = subject_row(driver, "Eileen Collins")
    assert row.find_element("css selector", ".subject-faces").text == "0"
    assert row.find_element("css selector", ".subject-metadata").text == '{"team":"STS-93"}'
    css(driver, "#results rect.face-box")[0].click()
    assert "face #0" in text_of(driver, "#selected-face")
    subject_row(driver, "Eileen Collins").find_element("css selector", "button.enroll").click()
    wait(driver, lambda d: text_of(d, "#results text.face-label").startswith("Eileen Collins "))
    distance = float(text_of(driver, "#results text.face-label").split()[-1])
    assert distance < 0.1  # the same picture
    assert text_of(driver, "#results td.identity") == "Eileen Collins"
    wait(driver, lambda d: subject_row(d, "Eileen Collins").find_element("css selector", ".subject-faces").text == "1")

    # Verify two pictures side by side.
    upload(driver, pictures["astronaut"], "#verify-a")
    upload(driver, pictures["turned"], "#verify-b")
    css(driver, "#verify button[type=submit]")[0].click()
    wait(driver, lambda d: text_of(d, "#verify-answer"))
    assert text_of(driver, "#verify-answer").startswith("Same person: distance 0.")
    wait(driver, lambda d: len(css(d, "#verify-pictures rect.face-box")) == 2)

    # Delete her (a second press confirms); the label goes back to unknown.
    button = subject_row(driver, "Eileen Collins").find_element("css selector", "button.delete")
    button.click()
    assert button.text == "Really delete?"
    button.click()
    wait(driver, lambda d: subject_row(d, "Eileen Collins") is None)
    wait(driver, lambda d: text_of(d, "#results text.face-label") == "#0 unknown")
    assert "Deleted Eileen Collins and 1 face." in text_of(driver, "#subjects-status")
    no_csp_violations(driver)


@needs_browser
def test_a_clip_becomes_a_timeline_of_tracks(serve_app, browser, tmp_path):
    """Two people crossing: two tracks, each with its best face cut from the clip; clicking one plays from its first frame."""
    from tests import video_clips

    base, _ = serve_app
    driver = browser
    path = tmp_path / "crossing.webm"
    path.write_bytes(video_clips.crossing("vp9").data)
    open_page(driver, base)
    upload(driver, path, "#clip")
    wait(driver, lambda d: css(d, "#timeline button.track"))
    assert re.fullmatch(r"2 tracks in \d+ sampled frames\.", text_of(driver, "#video-status"))
    names = [text_of(driver, f"#timeline li:nth-child({i}) .track-name") for i in (1, 2)]
    # Nobody is enrolled here: unknown, or too small to identify (the camera man's head is pasted small).
    assert all(re.fullmatch(rf"#{i} unknown( \(too small\))?", name) for i, name in enumerate(names)), names
    for i in (1, 2):
        assert re.fullmatch(r"deepfake: (real|fake) \(mean [01]\.\d\d\)", text_of(driver, f"#timeline li:nth-child({i}) .track-deepfake"))
        assert len(css(driver, f"#timeline li:nth-child({i}) rect.seen")) >= 3
    wait(driver, lambda d: len(css(d, "#timeline canvas[data-drawn]")) == 2)  # the best faces, drawn from the clip
    second = css(driver, "#timeline button.track")[1]
    start = float(second.get_attribute("data-start"))
    second.click()
    wait(driver, lambda d: abs(d.execute_script("return document.getElementById('player').currentTime") - start) < 0.5)
    no_csp_violations(driver)


@needs_browser
def test_errors_show_the_api_message(serve_app, browser, pictures):
    base, _ = serve_app
    driver = browser
    expected = httpx.post(
        f"{base}/v1/analyze", files={"image": ("notes.jpg", pictures["not_a_picture"].read_bytes())}, headers={"X-API-Key": KEY}, timeout=60
    ).json()["error"]
    open_page(driver, base)
    upload(driver, pictures["not_a_picture"])
    wait(driver, lambda d: css(d, "#analyze-error")[0].is_displayed())
    assert text_of(driver, "#analyze-error") == f"{expected['message']} (invalid_image, HTTP 400)"
    assert expected["message"].startswith("the bytes are not a supported image")

    # Two pictures at once go through /v1/analyze/batch: one drawn, one with its own error.
    open_page(driver, base)  # a fresh input: chromedriver adds files to a multiple input's list
    css(driver, "#pictures")[0].send_keys(f"{pictures['astronaut']}\n{pictures['not_a_picture']}")
    wait(driver, lambda d: len(css(d, "#results figure.picture")) == 2)
    first, second = css(driver, "#results figure.picture")
    assert len(first.find_elements("css selector", "rect.face-box")) == 1
    assert second.find_element("css selector", ".error").text == f"{expected['message']} (invalid_image)"
    assert not css(driver, "#analyze-error")[0].is_displayed()

    # Without the key, the page says what the API says, and nothing is drawn.
    open_page(driver, base, key=None)
    upload(driver, pictures["astronaut"])
    wait(driver, lambda d: css(d, "#analyze-error")[0].is_displayed())
    assert text_of(driver, "#analyze-error") == "a valid API key is required (unauthorized, HTTP 401)"
    assert not css(driver, "#results rect.face-box")
    no_csp_violations(driver)


@needs_browser
def test_hostile_subject_name_is_shown_as_text(serve_app, browser, pictures):
    from selenium.common.exceptions import NoAlertPresentException

    base, _ = serve_app
    driver = browser
    open_page(driver, base)
    create_subject(driver, HOSTILE, '{"note": "<script>alert(2)</script>"}')
    row = subject_row(driver, HOSTILE)
    assert row.find_element("css selector", ".subject-name").text == HOSTILE
    assert row.find_element("css selector", ".subject-metadata").text == '{"note":"<script>alert(2)</script>"}'
    # The name also reaches the drawing once the face is enrolled under it.
    upload(driver, pictures["astronaut"])
    wait(driver, lambda d: css(d, "#results rect.face-box"))
    css(driver, "#results g.face")[0].click()
    subject_row(driver, HOSTILE).find_element("css selector", "button.enroll").click()
    wait(driver, lambda d: text_of(d, "#results text.face-label").startswith(HOSTILE))
    assert text_of(driver, "#results td.identity") == HOSTILE
    # Nothing became markup and nothing ran.
    assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"], script:not([src])').length") == 0
    assert driver.execute_script("return [...document.scripts].map(s => s.getAttribute('src'))") == ["ui/ui.js"]
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text
    no_csp_violations(driver)
    headers = {"X-API-Key": KEY}
    (subject,) = [s for s in httpx.get(f"{base}/v1/subjects", headers=headers, timeout=30).json()["subjects"] if s["name"] == HOSTILE]
    assert httpx.delete(f"{base}/v1/subjects/{subject['id']}", headers=headers, timeout=30).status_code == 200


@needs_browser
def test_group_photo_screenshot(serve_app, tmp_path):
    """The README's picture: the page on a real group photo (FACEGRAPH_UI_SCREENSHOT=PATH keeps it).

    Taken on the default config, which has no deepfake classifier: the demo classifier of the
    other tests scores colours, and its "deepfake 1.00" on every face would read as a verdict.
    It runs as a second app beside this module's, under its own route prefix (the page's paths
    are relative), with one detector replica so both fit the test cluster's CPUs, and in a
    browser of its own: one that kept a connection to the first app could send it there.
    """
    from ray import serve

    from facegraph.graph.app import build_app
    from facegraph.graph.config import FacegraphConfig

    if not GROUP_PHOTO.exists():
        pytest.skip(f"{GROUP_PHOTO} is absent (the shared photos live outside the repository)")
    base, _ = serve_app
    default = {
        "name": "facegraph-default",
        "detector": {**FacegraphConfig().detector.model_dump(mode="json"), "deployment": {"num_replicas": 1, "num_cpus": 0.5}},
        "gallery": {"database": str(tmp_path / "gallery.sqlite3")},
        "ingress": {"api_keys": [KEY]},
    }
    serve.run(build_app(default), name=default["name"], route_prefix="/default")
    driver = chromium(tmp_path / "chromium-profile")
    try:
        driver.set_window_size(1400, 2400)  # tall enough for the whole section: an element shot stops at the window
        open_page(driver, f"{base}/default")
        upload(driver, GROUP_PHOTO)
        wait(driver, lambda d: css(d, "#results dl.timings"))
        assert len(css(driver, "#results rect.face-box")) == 6  # the six people at the table
        assert len(css(driver, "#results circle.landmark")) == 30 and not css(driver, "#results text.face-deepfake")
        css(driver, "#results g.face")[0].click()
        section = css(driver, "#analyze")[0]
        png = section.screenshot_as_png
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
        (tmp_path / "ui.png").write_bytes(png)
        keep = os.environ.get("FACEGRAPH_UI_SCREENSHOT")
        if keep:
            Path(keep).write_bytes(png)
        no_csp_violations(driver)
    finally:
        driver.quit()
        serve.delete(default["name"])
