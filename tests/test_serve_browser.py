"""`maf serve` in a real browser: Debian's chromium, driven by Selenium through chromedriver.

A missing browser fails these tests (it does not skip them): .ci/run installs chromium and
chromium-driver. Every test also checks that the page logged no console error and sent no
request to a host other than loopback. Screenshots go to $MAF_SCREENSHOTS when it is set,
else to pytest's temporary folder.
"""
from __future__ import annotations

import json
import os
import re
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


STRAY = re.compile(r"\b(null|undefined|NaN)\b|\[object Object\]")


def _no_stray_values(browser, where: str) -> None:
    """No visible text reads null, undefined, NaN or [object Object] (a value the page failed to show)."""
    text = browser.execute_script("return document.body.innerText")
    found = STRAY.findall(text)
    assert not found, f"{where}: {found[:5]} in {text[:300]!r}"


def _shown(browser, selector: str) -> list:
    return browser.execute_script(f"return [...document.querySelectorAll({selector!r})].map(e => e.dataset.id)")


def _entities(browser, selector: str) -> list[tuple]:
    return [tuple(x) for x in browser.execute_script(
        f"return [...document.querySelectorAll({selector!r})].map(e => [e.dataset.type, +e.dataset.start, "
        "+e.dataset.end, e.firstChild.textContent])")]


def test_the_page_opens_with_no_console_error_and_no_request_off_the_machine(browser, server, shots, rows):
    _open(browser, server + "/")
    assert browser.execute_script("return document.querySelectorAll('li.tweet').length") == len(rows)
    _wait(lambda: browser.execute_script("return [...document.querySelectorAll('li.tweet img')].filter(i => "
                                         "i.getBoundingClientRect().top < innerHeight).every(i => i.complete && "
                                         "i.naturalWidth > 0)"), "the images")
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
    assert _shown(browser, "li.tweet.has-error") == wrong  # the red border follows the same rule
    browser.find_element("id", "f-errors").click()
    assert _shown(browser, "li.tweet.has-error") == wrong[:50]
    text_only = [json.loads(x) for x in (served_runs["text-only"] / "predictions" / "test.jsonl").read_text().split(
        "\n") if x.strip()]

    def errors(row) -> int:
        gold, predicted = set(get_entities(row["gold"])), set(get_entities(row["predicted"]))
        return len(gold ^ predicted)
    helped = [str(a["id"]) for a, b in zip(rows, text_only) if errors(a) < errors(b)]
    hurt = [str(a["id"]) for a, b in zip(rows, text_only) if errors(a) > errors(b)]
    assert browser.find_element("id", "f-helped-label").text == "image helped"
    browser.find_element("id", "f-helped").click()
    assert helped and _shown(browser, "li.tweet") == helped
    browser.find_element("id", "f-helped").click()
    browser.find_element("id", "f-hurt").click()
    assert _shown(browser, "li.tweet") == hurt
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
    expected = sum(e["end"] - e["start"] for e in rows[n]["entities"])  # a picture per word of each entity
    _wait(lambda: browser.execute_script(
        "return document.querySelectorAll('#overlay figure[data-drawn=true]').length") == expected, "the heatmaps")
    assert browser.execute_script("return document.activeElement.id") == "overlay-close"  # focus in the dialog
    assert f"tweet={n + 1}" in browser.current_url
    text = browser.find_element("css selector", "#overlay .tweet-text").text
    assert all(word in text for word in rows[n]["words"])  # the tweet's text is in the dialog
    assert browser.find_element("css selector", "#overlay figure.photo img").get_attribute("naturalWidth") != "0"
    bar = browser.find_element("css selector", "#overlay .colour-bar")
    assert "uniform 1/49 = 0.020" in bar.text and float(bar.get_attribute("data-top")) >= 2 / 49
    spread = browser.execute_script("""
        const canvas = document.querySelector('#overlay canvas');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let low = 255, high = 0;
        for (let i = 0; i < data.length; i += 4) { low = Math.min(low, data[i]); high = Math.max(high, data[i]); }
        return high - low;""")
    assert spread > 20  # a picture under a heatmap, not a blank canvas
    captions = [e.text for e in browser.find_elements("css selector", "#overlay figure.attention-map figcaption")]
    assert captions == [f"{word} → {e['type']}" for e in rows[n]["entities"] for word in e["words"]]
    browser.save_screenshot(str(shots / "serve-attention.png"))
    _no_stray_values(browser, "the dialog")
    browser.find_element("id", "overlay-close").click()
    assert not browser.execute_script("return document.getElementById('overlay').open")
    assert browser.execute_script("return document.activeElement") == button  # focus back where it was
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
    _wait(lambda: browser.execute_script("const i = document.getElementById('preview-img'); "
                                         "return !document.getElementById('preview').hidden && i.naturalWidth > 0"),
          "the photo's preview")
    browser.find_element("id", "try-submit").click()
    _wait(lambda: len(browser.find_elements("css selector", "#try-result .try-col")) == 3, "the three answers")
    want = [(e["type"], e["start"], e["end"], " ".join(e["words"])) for e in expected["entities"]]
    assert _entities(browser, '#try-result .try-col[data-case="image"] .pred-row .ent') == want
    info = browser.find_element("css selector", '.try-col[data-case="image"] .try-info').text
    assert f"p = {expected['match_prob']:.2f} · image ok" in info
    alone = MAFPredictor.from_pretrained(served_runs["maf"], "cpu").predict([{"id": "x", "text": text}],
                                                                            images={})[0]
    assert _entities(browser, '.try-col[data-case="text"] .pred-row .ent') == \
        [(e["type"], e["start"], e["end"], " ".join(e["words"])) for e in alone["entities"]]
    assert "image missing" in browser.find_element("css selector", '.try-col[data-case="text"] .try-info').text
    other = MAFPredictor.from_pretrained(served_runs["text-only"], "cpu").predict([{"id": "x", "text": text}])[0]
    assert _entities(browser, '.try-col[data-case="compare"] .pred-row .ent') == \
        [(e["type"], e["start"], e["end"], " ".join(e["words"])) for e in other["entities"]]
    assert "p = none (no CM) · image unused" in browser.find_element(
        "css selector", '.try-col[data-case="compare"] .try-info').text
    _wait(lambda: browser.execute_script(
        "return document.querySelectorAll('#try-result figure[data-drawn=true]').length") ==
        sum(e["end"] - e["start"] for e in expected["entities"]), "heatmaps")  # a picture per word
    browser.set_window_size(1280, 1450)  # the form, the three answers and the colour bar in one picture
    browser.save_screenshot(str(shots / "serve-try.png"))
    browser.set_window_size(1280, 1100)
    _no_stray_values(browser, "Try")
    browser.find_element("id", "try-remove").click()
    assert browser.execute_script("return document.getElementById('preview').hidden")
    assert browser.execute_script("return document.getElementById('try-image').value") == ""
    _offline_and_quiet(browser)


def test_try_draws_every_word_of_an_entity_on_one_scale(browser, server, rows, sample_dir, tmp_path, monkeypatch):
    """Try draws a picture per word of each entity, as the dialog does, all on the colour bar's
    scale. The tiny run tags one-word entities only, so the server (in this process) is made to
    find a three-word entity and a one-word one; their maps are the model's own."""
    import base64

    import httpx

    import maf_core.predict

    row = next(r for r in rows if len(r["words"]) >= 4 and (sample_dir / "images" / f"{r['id']}.jpg").is_file())
    image = tmp_path / "mine.jpg"
    shutil.copy(sample_dir / "images" / f"{row['id']}.jpg", image)
    text, words = " ".join(row["words"]), row["words"]
    spans = [("PER", 0, 3), ("LOC", 3, 4)]
    monkeypatch.setattr(maf_core.predict, "get_entities", lambda tags: spans)
    answer = httpx.post(f"{server}/api/predict?attention=true", timeout=60, json={"items": [
        {"text": text, "image": base64.b64encode(image.read_bytes()).decode()}]})
    assert answer.status_code == 200, answer.text
    maps = [m for e in answer.json()["items"][0]["entities"] for m in e["word_attention"]]
    assert len(maps) == 4
    _open(browser, server + "/")
    browser.find_element("id", "tab-try").click()
    browser.find_element("id", "try-text").send_keys(text)
    browser.find_element("id", "try-image").send_keys(str(image))
    browser.find_element("id", "try-submit").click()
    _wait(lambda: browser.execute_script(
        "return document.querySelectorAll('.try-maps figure[data-drawn=true]').length") == 4, "a picture per word")
    captions = [e.text for e in browser.find_elements("css selector", ".try-maps figure.attention-map figcaption")]
    assert captions == [f"{words[0]} → PER", f"{words[1]} → PER", f"{words[2]} → PER", f"{words[3]} → LOC"]
    bar = browser.find_element("css selector", ".try-maps .colour-bar")
    assert "uniform 1/49 = 0.020" in bar.text
    assert abs(float(bar.get_attribute("data-top")) - max([2 / 49] + [max(m) for m in maps])) < 1e-9
    _no_stray_values(browser, "Try")
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


def test_no_visible_null_undefined_nan_or_object_under_every_filter(browser, server, served_runs):
    from selenium.webdriver.support.ui import Select

    _open(browser, server + "/")
    _no_stray_values(browser, "no filter")
    for box in ("f-errors", "f-helped", "f-hurt", "f-decided"):
        browser.find_element("id", box).click()
        _no_stray_values(browser, box)
        browser.find_element("id", box).click()
    for select in ("f-type", "f-status"):
        chooser = Select(browser.find_element("id", select))
        for option in [o.get_attribute("value") for o in chooser.options]:
            chooser.select_by_value(option)
            _no_stray_values(browser, f"{select}={option}")
        chooser.select_by_value("")
    for field, value in (("f-pmin", "0.4"), ("f-pmax", "0.6"), ("f-text", "zzzz-nothing")):
        browser.find_element("id", field).send_keys(value)
        _no_stray_values(browser, f"{field}={value}")
    lines = browser.execute_script("return document.querySelectorAll('.pred-row').length")
    assert lines == 0 or browser.find_element("id", "count").text.startswith("0 of")
    _offline_and_quiet(browser)


def test_the_page_says_which_weights_are_random(browser, server):
    _open(browser, server + "/")
    notes = browser.find_element("id", "notes")
    assert notes.is_displayed()
    assert "maf: its BERT (tiny) has random weights" in notes.text
    assert "maf: its image backbone (resnet18) has random weights" in notes.text


def test_the_first_click_after_typing_in_a_filter_is_not_lost(browser, server, rows):
    _open(browser, server + "/")
    field = browser.find_element("id", "f-text")
    field.send_keys("a")
    button = browser.find_element("css selector", "li.tweet button.attention")
    button.click()  # the text box loses focus on this click: the list under the pointer must stay
    _wait(lambda: browser.execute_script("return document.getElementById('overlay').open"), "the dialog")
    browser.find_element("id", "overlay-close").click()
    _offline_and_quiet(browser)


def test_the_filters_and_the_open_tweet_live_in_the_address(browser, server, rows):
    from selenium.webdriver.support.ui import Select

    _open(browser, server + "/")
    browser.find_element("id", "f-errors").click()
    Select(browser.find_element("id", "f-type")).select_by_value("PER")
    shown = _shown(browser, "li.tweet")
    button = browser.find_element("css selector", "li.tweet button.attention")
    n = int(browser.execute_script("return arguments[0].closest('li.tweet').dataset.n", button))
    button.click()
    _wait(lambda: f"tweet={n + 1}" in browser.current_url, "the tweet in the address")
    address = browser.current_url
    assert "errors=1" in address and "type=PER" in address
    browser.get("about:blank")
    _open(browser, address)
    assert browser.find_element("id", "f-errors").is_selected()
    assert browser.find_element("id", "f-type").get_attribute("value") == "PER"
    assert _shown(browser, "li.tweet") == shown
    _wait(lambda: browser.execute_script("const d = document.getElementById('overlay'); "
                                         f"return d.open && d.dataset.n === '{n}'"), "the dialog, open again")
    browser.find_element("id", "overlay-close").click()
    assert "tweet=" not in browser.current_url
    _offline_and_quiet(browser)


def test_at_400_px_nothing_scrolls_sideways_and_focus_is_visible(browser, server, shots, sample_dir, rows):
    browser.set_window_size(400, 900)
    try:
        _open(browser, server + "/")
        width = "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        scroll, client = browser.execute_script(width)
        assert scroll <= client, (scroll, client)
        browser.save_screenshot(str(shots / "serve-narrow.png"))
        browser.find_element("css selector", "li.tweet button.attention").click()
        _wait(lambda: browser.execute_script("return document.getElementById('overlay').open"), "the dialog")
        scroll, client = browser.execute_script(width)
        assert scroll <= client, ("dialog", scroll, client)
        browser.find_element("id", "overlay-close").click()
        browser.find_element("id", "tab-try").click()
        scroll, client = browser.execute_script(width)
        assert scroll <= client, ("try", scroll, client)
        browser.execute_script("document.getElementById('try-image').focus()")
        outline = browser.execute_script("const s = getComputedStyle(document.getElementById('try-image-label')); "
                                         "return [s.outlineStyle, s.outlineWidth]")
        assert outline[0] != "none" and outline[1] != "0px", outline  # the hidden file input's focus shows
        assert _tab_shows_focus(browser)
    finally:
        browser.set_window_size(1280, 1100)
    _offline_and_quiet(browser)


def _tab_shows_focus(browser) -> bool:
    from selenium.webdriver.common.keys import Keys

    browser.find_element("tag name", "body").send_keys(Keys.TAB)
    return browser.execute_script("const s = getComputedStyle(document.activeElement); "
                                  "return s.outlineStyle !== 'none' && s.outlineWidth !== '0px'")


def test_no_serious_or_critical_accessibility_violation(browser, server, sample_dir, rows, tmp_path):
    from axe_selenium_python import Axe

    def check(where: str) -> None:
        axe = Axe(browser)
        axe.inject()
        found = [v for v in axe.run()["violations"] if v["impact"] in ("serious", "critical")]
        assert not found, f"{where}: " + "; ".join(f"{v['id']}: {v['help']} ({len(v['nodes'])}, e.g. "
                                                   f"{v['nodes'][0]['html'][:120]})" for v in found)

    _open(browser, server + "/")
    check("the list")
    browser.find_element("css selector", "li.tweet button.attention").click()
    _wait(lambda: browser.find_elements("css selector", "#overlay figure[data-drawn=true]"), "the heatmaps")
    check("the attention dialog")
    browser.find_element("id", "overlay-close").click()
    row = next(r for r in rows if (sample_dir / "images" / f"{r['id']}.jpg").is_file())
    image = tmp_path / "mine.jpg"
    shutil.copy(sample_dir / "images" / f"{row['id']}.jpg", image)
    browser.find_element("id", "tab-try").click()
    browser.find_element("id", "try-text").send_keys(" ".join(row["words"]))
    browser.find_element("id", "try-image").send_keys(str(image))
    browser.find_element("id", "try-submit").click()
    _wait(lambda: len(browser.find_elements("css selector", "#try-result .try-col")) == 3, "the three answers")
    check("Try")
    _offline_and_quiet(browser)
