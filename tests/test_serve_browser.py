"""`maf serve` in a real browser: Debian's chromium, driven by Selenium through chromedriver.

A missing browser fails these tests (it does not skip them): .ci/run installs chromium and
chromium-driver. Every test also checks that the page logged no console error and sent no
request to a host other than loopback. Screenshots go to $MAF_SCREENSHOTS when it is set,
else to pytest's temporary folder.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from maf_core.predict import MAFPredictor
from maf_core.serve import build
from maf_core.serve.browse import Browse
from pipeline.schemes import get_entities

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(scope="module")
def server(served_runs):
    """The two tiny runs served on a free loopback port, in a thread of this process."""
    import uvicorn

    app = build(served_runs["maf"], compare=served_runs["text-only"], device="cpu")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app.state.access.bind("127.0.0.1", sock.getsockname()[1])
    running = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _wait(lambda: running.started, "the server to start")
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    running.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver; .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-default-apps", "--no-pings", "--disable-gpu"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    chosen = os.environ.get("MAF_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def rows(served_runs) -> list[dict]:
    path = served_runs["maf"] / "predictions" / "test.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _wait(condition, what: str, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _open(browser, url: str) -> None:
    browser.get(url)
    _wait(lambda: browser.execute_script("return document.body.dataset.ready === 'true'"), "the page")


def _offline_and_quiet(browser) -> list[str]:
    """Fails on a console error or a request to another host than loopback; returns the URLs requested."""
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    away = [u for u in urls if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).hostname not in LOOPBACK]
    assert not away, away
    return urls


def _shown(browser, selector: str) -> list:
    return browser.execute_script(f"return [...document.querySelectorAll({selector!r})].map(e => e.dataset.id)")


def _entities(browser, selector: str) -> list[tuple]:
    return [tuple(x) for x in browser.execute_script(
        f"return [...document.querySelectorAll({selector!r})].map(e => [e.dataset.type, +e.dataset.start, "
        "+e.dataset.end, e.firstChild.textContent])")]


def test_the_page_opens_with_no_console_error_and_no_request_off_the_machine(browser, server, shots, rows):
    _open(browser, server + "/")
    assert browser.execute_script("return document.querySelectorAll('li.tweet').length") == len(rows)
    _wait(lambda: browser.execute_script("return [...document.images].filter(i => i.getBoundingClientRect().top < "
                                         "innerHeight).every(i => i.complete && i.naturalWidth > 0)"), "the images")
    browser.save_screenshot(str(shots / "serve-browse.png"))
    urls = _offline_and_quiet(browser)
    assert any(u.endswith("/api/browse") for u in urls) and any("/api/image/" in u for u in urls)


def test_the_scores_shown_are_report_json_s(browser, server, served_runs):
    _open(browser, server + "/")
    for name in ("maf", "text-only"):
        report = json.loads((served_runs[name] / "report.json").read_text())["test"]
        for kind in [*report["types"], "overall"]:
            scores = report["overall"] if kind == "overall" else report["types"][kind]
            shown = browser.execute_script(
                f"return [...document.querySelectorAll('tr[data-run=\"{name}\"] td[data-type=\"{kind}\"]')]"
                ".map(td => td.textContent)")
            assert shown == [f"{scores[key]:.2f}" for key in ("precision", "recall", "f1")], (name, kind)
    _offline_and_quiet(browser)


def test_the_first_tweet_s_predicted_entities_are_highlighted_as_the_predictions_say(browser, server, rows):
    _open(browser, server + "/")
    first_with = next(n for n, r in enumerate(rows) if r["entities"])
    for n in {0, first_with}:
        want = [(e["type"], e["start"], e["end"], " ".join(e["words"])) for e in rows[n]["entities"]]
        assert _entities(browser, f'li.tweet[data-n="{n}"] .pred-row[data-run="0"] .ent') == want
        gold = [(t, s, e, " ".join(rows[n]["words"][s:e])) for t, s, e in get_entities(rows[n]["gold"])]
        assert _entities(browser, f'li.tweet[data-n="{n}"] .words[data-row="gold"] .ent') == gold
    _offline_and_quiet(browser)


def test_errors_only_shows_exactly_the_tweets_with_an_error(browser, server, rows, served_runs):
    _open(browser, server + "/")
    browser.find_element("id", "f-errors").click()
    wrong = [str(r["id"]) for r in rows if get_entities(r["gold"]) != get_entities(r["predicted"])]
    assert 0 < len(wrong) < len(rows)
    assert _shown(browser, "li.tweet") == wrong
    assert browser.find_element("id", "count").text == f"{len(wrong)} of {len(rows)} tweets"
    browser.find_element("id", "f-errors").click()
    browser.find_element("id", "f-disagree").click()
    text_only = [json.loads(x) for x in (served_runs["text-only"] / "predictions" / "test.jsonl").read_text().split(
        "\n") if x.strip()]
    disagree = [str(a["id"]) for a, b in zip(rows, text_only) if a["entities"] != b["entities"]]
    assert _shown(browser, "li.tweet") == disagree
    _offline_and_quiet(browser)


def test_the_filters_keep_the_tweets_they_name(browser, server, rows, served_runs):
    from selenium.webdriver.support.ui import Select

    browse = Browse(served_runs["maf"], compare=served_runs["text-only"]).payload()["tweets"]
    _open(browser, server + "/")
    Select(browser.find_element("id", "f-type")).select_by_value("PER")
    per = [t["id"] for t in browse if any(e[0] == "PER" for e in t["gold"] + t["runs"][0]["entities"] +
                                          t["runs"][1]["entities"])]
    assert _shown(browser, "li.tweet") == per
    Select(browser.find_element("id", "f-type")).select_by_value("")
    browser.find_element("id", "f-decided").click()
    decided = [t["id"] for t in browse if t.get("image_decided")]
    assert 0 < len(decided) and _shown(browser, "li.tweet") == decided
    browser.find_element("id", "f-decided").click()
    low = browser.find_element("id", "f-pmax")
    low.clear()
    low.send_keys("0.5")
    assert _shown(browser, "li.tweet") == [t["id"] for t in browse if t["runs"][0]["match_prob"] <= 0.5]
    low.clear()
    low.send_keys("1")
    word = rows[3]["words"][0]
    browser.find_element("id", "f-text").send_keys(word)
    assert _shown(browser, "li.tweet") == [str(r["id"]) for r in rows
                                           if word.lower() in (str(r["id"]) + " " + " ".join(r["words"])).lower()]
    _offline_and_quiet(browser)


def test_a_tweet_s_attention_overlay_opens(browser, server, shots, rows):
    _open(browser, server + "/")
    button = browser.find_element("css selector", "li.tweet button.attention")
    n = int(browser.execute_script("return arguments[0].closest('li.tweet').dataset.n", button))
    button.click()
    expected = len(rows[n]["entities"])
    _wait(lambda: browser.execute_script(
        "return document.querySelectorAll('#overlay figure[data-drawn=true]').length") == expected, "the heatmaps")
    spread = browser.execute_script("""
        const canvas = document.querySelector('#overlay canvas');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let low = 255, high = 0;
        for (let i = 0; i < data.length; i += 4) { low = Math.min(low, data[i]); high = Math.max(high, data[i]); }
        return high - low;""")
    assert spread > 20  # a picture under a heatmap, not a blank canvas
    captions = [e.text for e in browser.find_elements("css selector", "#overlay figcaption")]
    assert captions == [f"{' '.join(e['words'])} → {e['type']}" for e in rows[n]["entities"]]
    browser.save_screenshot(str(shots / "serve-attention.png"))
    _offline_and_quiet(browser)


def test_try_with_a_text_and_a_jpeg_shows_maf_predictor_s_entities(browser, server, shots, rows, served_runs,
                                                                   sample_dir, tmp_path):
    row = next(r for r in rows if r["entities"] and (sample_dir / "images" / f"{r['id']}.jpg").is_file())
    text = " ".join(row["words"])
    image = tmp_path / "mine.jpg"
    shutil.copy(sample_dir / "images" / f"{row['id']}.jpg", image)
    expected = MAFPredictor.from_pretrained(served_runs["maf"], "cpu").predict([{"id": "mine", "text": text}],
                                                                               images_dir=tmp_path)[0]
    assert expected["entities"]
    _open(browser, server + "/")
    browser.find_element("id", "tab-try").click()
    browser.find_element("id", "try-text").send_keys(text)
    browser.find_element("id", "try-image").send_keys(str(image))
    browser.find_element("id", "try-submit").click()
    _wait(lambda: browser.find_elements("css selector", "#try-result .pred-row"), "the tagged tweet")
    want = [(e["type"], e["start"], e["end"], " ".join(e["words"])) for e in expected["entities"]]
    assert _entities(browser, "#try-result .pred-row .ent") == want
    assert f"p = {expected['match_prob']:.2f} · image ok" in browser.find_element("css selector", ".try-info").text
    _wait(lambda: browser.execute_script(
        "return document.querySelectorAll('#try-result figure[data-drawn=true]').length") == len(want), "heatmaps")
    browser.save_screenshot(str(shots / "serve-try.png"))
    _offline_and_quiet(browser)


def test_try_shows_the_error_of_a_bad_image(browser, server, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    _open(browser, server + "/")
    browser.find_element("id", "tab-try").click()
    browser.find_element("id", "try-text").send_keys("Rob at the beach")
    browser.find_element("id", "try-image").send_keys(str(bad))
    browser.find_element("id", "try-submit").click()
    shown = _wait(lambda: browser.find_element("id", "try-error").text, "the error")
    assert shown == "items.0.image: the image cannot be decoded (not an image, or a truncated or corrupt file)"
    browser.get_log("browser")  # the 422 itself is logged as a failed resource; nothing else may be


def test_the_api_docs_work_offline(browser, server):
    browser.get(server + "/docs")
    _wait(lambda: browser.find_elements("css selector", ".swagger-ui .info .title"), "Swagger UI")
    assert "maf serve" in browser.find_element("css selector", ".swagger-ui .info .title").text
    operation = _wait(lambda: browser.find_elements("css selector", ".opblock-summary-path[data-path='/api/predict']"),
                      "the predict operation")
    operation[0].click()
    _wait(lambda: browser.find_elements("css selector", ".opblock.is-open .opblock-section-request-body"),
          "the request body's schema")
    assert "Resolver error" not in browser.page_source
    _offline_and_quiet(browser)
