"""`maf serve`: the browse data, the images by id, the JSON API, its limits and bad inputs, the
micro-batcher, and images extracted in memory as extraction makes them."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from maf_core.predict import MAFPredictor
from maf_core.serve import STATIC, Limits, build, serve
from maf_core.serve.batching import MicroBatcher, QueueFull
from maf_core.serve.browse import Browse, mark_errors
from pipeline.errors import DataError
from pipeline.extract import extract_images
from pipeline.featurize import ImageFeaturizer, MemoryStore
from pipeline.fingerprint import extract_config_of
from pipeline.schemes import get_entities
from pipeline.store import FeatureStore

LIMITS = Limits(max_upload_bytes=200_000, max_text_chars=2000)


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _jpeg(colour=(200, 40, 40), size=(96, 64)) -> bytes:
    out = io.BytesIO()
    picture = Image.new("RGB", size, colour)
    picture.paste((20, 20, 220), (10, 10, size[0] // 2, size[1] // 2))
    picture.save(out, "JPEG")
    return out.getvalue()


def _png_bomb(side: int = 100_000) -> bytes:
    """A small PNG whose header says side x side pixels (far over the pixel limit)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def app(served_runs):
    return build(served_runs["maf"], compare=served_runs["text-only"], limits=LIMITS, device="cpu")


@pytest.fixture(scope="module")
def browse(client) -> dict:
    return client.get("/api/browse").json()


@pytest.fixture(scope="module")
def predictor(served_runs) -> MAFPredictor:
    return MAFPredictor.from_pretrained(served_runs["maf"], "cpu")


# what the page shows


def test_errors_are_marked_by_kind():
    gold = [("PER", 0, 2), ("LOC", 3, 4), ("ORG", 5, 6), ("MISC", 8, 9)]
    predicted = [("PER", 0, 2), ("ORG", 3, 4), ("ORG", 5, 7), ("PER", 7, 8)]
    kinds = [(m["kind"], m["start"]) for m in mark_errors(gold, predicted)]
    assert kinds == [("correct", 0), ("wrong-type", 3), ("wrong-span", 5), ("spurious", 7), ("missed", 8)]
    assert mark_errors(gold, list(gold)) == [{"kind": "correct", "type": t, "start": s, "end": e} for t, s, e in gold]


def test_scores_at_the_top_equal_report_json(browse, served_runs):
    for run, name in zip(browse["runs"], ("maf", "text-only")):
        report = json.loads((served_runs[name] / "report.json").read_text())["test"]
        assert run["scores"] == report
        assert run["report"] == report


def test_every_test_tweet_is_listed_with_its_image_status_and_annotations(browse, served_runs, sample_dir,
                                                                          sample_store):
    rows = _rows(served_runs["maf"] / "predictions" / "test.jsonl")
    store = FeatureStore(sample_store)
    notes = {}
    for line in (sample_dir / "annotations.jsonl").read_text().splitlines():
        record = json.loads(line)
        notes[str(record["image_id"])] = record
    assert [t["id"] for t in browse["tweets"]] == [str(r["id"]) for r in rows]
    for tweet, row in zip(browse["tweets"], rows):
        assert tweet["image_status"] == {0: "ok", 1: "missing", 2: "empty", 3: "unreadable", 4: "too_large"}[
            int(store.status[store.rows[tweet["id"]]])]
        assert tweet["relation"] == notes[tweet["id"]]["relation"]
        assert tweet["runs"][0]["entities"] == [list(e) for e in get_entities(row["predicted"])]
        assert tweet["runs"][0]["error"] == (get_entities(row["gold"]) != get_entities(row["predicted"]))
    assert any(t["image_decided"] for t in browse["tweets"])


def test_image_helped_and_hurt_count_each_run_s_errors(browse):
    for tweet in browse["tweets"]:
        gold = {tuple(g) for g in tweet["gold"]}
        a, b = ({tuple(e) for e in r["entities"]} for r in tweet["runs"])
        errors_a, errors_b = len(a - gold) + len(gold - a), len(b - gold) + len(gold - b)
        want = None if a == b else "helped" if errors_a < errors_b else "hurt" if errors_a > errors_b else "tie"
        assert tweet["versus"] == want, tweet["id"]
    assert {t["versus"] for t in browse["tweets"]} >= {None, "helped"}


def test_the_page_is_told_which_weights_are_random(browse):
    maf, text_only = browse["runs"]
    assert maf["random"] == ["its BERT (tiny) has random weights: no pretrained encoder",
                             "its image backbone (resnet18) has random weights: the image features carry little "
                             "meaning"]
    assert text_only["random"] == ["its BERT (tiny) has random weights: no pretrained encoder"]


def test_p_is_null_for_a_run_without_cm_in_its_predictions_and_every_reader_copes(browse, served_runs, sample_dir):
    """predictions/<split>.jsonl says match_prob null for the text-only run (no CM), as
    MAFPredictor and the API do, and a number for MAF; the page, the p statistics and `maf
    report`'s comparison read both."""
    from maf_core.metrics import image_decided_scores, read_annotations
    from maf_core.report import comparison_table, load_runs, match_groups

    for split in ("valid", "test"):
        assert all(r["match_prob"] is None for r in _rows(served_runs["text-only"] / "predictions" / f"{split}.jsonl"))
        assert all(0 <= r["match_prob"] <= 1 for r in _rows(served_runs["maf"] / "predictions" / f"{split}.jsonl"))
    assert [r["has_matching"] for r in browse["runs"]] == [True, False]
    assert all(t["runs"][1]["match_prob"] is None for t in browse["tweets"])
    notes = read_annotations(sample_dir / "annotations.jsonl")
    maf, text_only = load_runs([served_runs["maf"], served_runs["text-only"]])
    asked = image_decided_scores(text_only.predictions, notes, text_only.report, with_p=True)  # even if asked
    assert asked["p_matched"] is None and asked["p_unrelated"] is None and asked["p_auc"] is None
    assert match_groups(text_only, notes) == {"matched": [], "unrelated": []}
    assert match_groups(text_only, {}) == {"tweets with an image": []}
    assert match_groups(maf, notes)["matched"]
    table = comparison_table([maf, text_only], notes).splitlines()
    assert table[2].split()[-3:] == ["-", "-", "-"] and table[1].split()[-3] != "-"


def test_predict_split_gives_p_only_for_a_model_with_cm(served_runs, sample_text, sample_store):
    """`model.has_p` decides: MAF with CM gives a number per tweet (0 without an image), MAF
    without CM (--no-matching, text-only) None, though its forward still returns zeros."""
    from dataclasses import replace

    import torch

    from maf_core.data import load_split
    from maf_core.inference import predict_split
    from maf_core.models import build_model, load_model

    split, store = load_split(sample_text, "test"), FeatureStore(sample_store)
    maf, text_only = (load_model(served_runs[name]) for name in ("maf", "text-only"))
    torch.manual_seed(0)
    no_matching = build_model(replace(maf.config, use_matching=False)).eval()
    for model, has_p in ((maf, True), (no_matching, False), (text_only, False)):
        assert model.has_p == has_p
        _, probs = predict_split(model, split, store, model.config.tags, "bioes", 16, torch.device("cpu"))
        assert len(probs) == len(split)
        assert all(isinstance(p, float) for p in probs) if has_p else all(p is None for p in probs)


def test_compare_refuses_a_run_of_other_tweets(served_runs, tmp_path):
    other = Path(shutil.copytree(served_runs["text-only"], tmp_path / "other"))
    rows = _rows(other / "predictions" / "test.jsonl")
    rows[2]["id"] = "someone-else"
    (other / "predictions" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="its test tweet 3 \\('someone-else'\\) is not"):
        Browse(served_runs["maf"], compare=other)


def test_a_split_without_predictions_is_refused_in_one_line(served_runs):
    with pytest.raises(DataError, match=r"no predictions of the train split; run `maf evaluate .* --split train`"):
        Browse(served_runs["maf"], split="train")


def test_the_command_says_what_is_missing_in_one_line(served_runs):
    from click.testing import CliRunner

    from cli.maf import main as maf

    done = CliRunner().invoke(maf, ["serve", str(served_runs["maf"]), "--split", "train"])
    assert done.exit_code == 1 and done.output.startswith("Error: ") and done.output.count("\n") == 1
    assert "no predictions of the train split; run `maf evaluate" in done.output


def test_images_are_served_by_id_from_the_split_only(client, browse, sample_dir):
    shown = next(t for t in browse["tweets"] if t["image_status"] == "ok")
    photo = client.get(f"/api/image/{shown['id']}")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    model = client.get(f"/api/image/{shown['id']}?view=model")
    with Image.open(io.BytesIO(model.content)) as seen:
        assert seen.size == (224, 224)
    train_id = (sample_dir / "train.txt").read_text().split("\n", 1)[0].removeprefix("IMGID:")
    assert (sample_dir / "images" / f"{train_id}.jpg").is_file()
    for bad in (train_id, "no-such-id", "..", "%2e%2e%2ftrain.txt", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd",
                "..%5Ctrain.txt"):
        answer = client.get(f"/api/image/{bad}")
        assert answer.status_code == 404, bad
        assert answer.json()["detail"]


def test_an_image_that_does_not_decode_is_not_served(served_runs, sample_dir, tmp_path, browse):
    images = Path(shutil.copytree(sample_dir / "images", tmp_path / "images"))
    cut = browse["tweets"][0]["id"]
    path = next(images.glob(f"{cut}.*"))
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(KeyError, match=f"image '{cut}': unreadable"):
        Browse(served_runs["maf"], images_dir=images).image(cut, "photo")


def test_attention_gives_each_predicted_entity_a_distribution_over_the_regions(client, browse):
    tweet = next(t for t in browse["tweets"] if t["runs"][0]["entities"] and t["image_status"] == "ok")
    answer = client.post(f"/api/attention/{tweet['n']}").json()
    assert [[e["type"], e["start"], e["end"]] for e in answer["entities"]] == tweet["runs"][0]["entities"]
    assert answer["grid"] == 7
    for entity in answer["entities"]:
        assert len(entity["attention"]) == entity["end"] - entity["start"]  # one map per word
        for word in entity["attention"]:
            assert len(word) == 49 and abs(sum(word) - 1) < 1e-4
    assert client.post("/api/attention/100000").status_code == 404


# the JSON API


def test_predict_gives_maf_predictor_s_entities_for_a_text_and_a_jpeg(client, predictor, tmp_path):
    texts = ["Statement from Real Madrid today", "Rob at the beach with Anna", "Paris"]
    images = [_jpeg(), _jpeg((30, 160, 60), (300, 200)), None]
    answer = client.post("/api/predict", json={"items": [{"text": t, "image": _b64(i) if i else None}
                                                         for t, i in zip(texts, images)]})
    assert answer.status_code == 200, answer.text
    folder = tmp_path / "images"
    folder.mkdir()
    for n, image in enumerate(images):
        if image:
            (folder / f"{n}.jpg").write_bytes(image)
    expected = predictor.predict([{"id": str(n), "text": t} for n, t in enumerate(texts[:2])], images_dir=folder)
    got = answer.json()["items"]
    for want, item in zip(expected, got):
        assert [(e["type"], e["start"], e["end"]) for e in item["entities"]] == \
               [(e["type"], e["start"], e["end"]) for e in want["entities"]]
        assert item["tags"] == want["tags"] and abs(item["match_prob"] - want["match_prob"]) < 1e-4
        assert item["image_status"] == "ok"
    assert got[2]["image_status"] == "missing" and got[2]["match_prob"] == 0.0 and got[2]["p"] == 0.0
    assert all("attention" not in e and "word_attention" not in e for item in got for e in item["entities"])
    assert "view" not in got[0]


def test_predict_gives_a_map_per_word_of_each_entity_as_the_dialog_does(client, browse, predictor, served_runs,
                                                                        monkeypatch):
    """MAFPredictor.predict(attention=True) and /api/predict?attention=true give `word_attention`,
    one map per word of each entity (the first is `attention`, as before): the maps the browse
    dialog (/api/attention/n) draws for the same tweet and image."""
    features = json.loads((served_runs["maf"] / "config.json").read_text())["features"]
    tweets = [t for t in browse["tweets"] if t["runs"][0]["entities"] and t["image_status"] == "ok"]
    tweets.sort(key=lambda t: -max(end - start for _, start, end in t["runs"][0]["entities"]))  # long ones first
    items = [{"id": t["id"], "words": t["words"], "image": t["id"]} for t in tweets[:6]]
    records = predictor.predict(items, features=features, attention=True, batch_size=1)
    for tweet, record in zip(tweets, records):
        dialog = client.post(f"/api/attention/{tweet['n']}").json()["entities"]
        assert [(e["type"], e["start"], e["end"]) for e in record["entities"]] == \
               [(e["type"], e["start"], e["end"]) for e in dialog]
        for entity, shown in zip(record["entities"], dialog):
            assert len(entity["word_attention"]) == entity["end"] - entity["start"]
            assert entity["attention"] == entity["word_attention"][0]
            assert np.allclose(entity["word_attention"], shown["attention"], atol=1e-5)
    # the tiny run predicts one-word entities only: a span of three words, and one cut by the run's
    # length, each word's map against the first-word map of that word alone
    import maf_core.predict

    max_length = json.loads((served_runs["maf"] / "config.json").read_text())["max_length"]
    words = ["a"] * (max_length + 1)  # one piece each
    seen = max_length - 2  # words with a piece before [SEP]
    item = {"id": "x", "words": words, "image": tweets[0]["id"]}

    def tagged(spans):
        monkeypatch.setattr(maf_core.predict, "get_entities", lambda tags: spans)
        return predictor.predict([item], features=features, attention=True)[0]["entities"]

    whole = tagged([("PER", 0, 3), ("PER", seen - 1, seen + 2)])
    alone = tagged([("PER", w, w + 1) for w in (0, 1, 2, seen - 1)])
    assert [len(e["word_attention"]) for e in whole] == [3, 1]  # the cut words have no map
    assert whole[0]["word_attention"] == [e["attention"] for e in alone[:3]]
    assert whole[1]["word_attention"] == [alone[3]["attention"]]
    assert len({json.dumps(m) for m in whole[0]["word_attention"]}) == 3  # three different maps
    monkeypatch.undo()
    answer = client.post("/api/predict?attention=true", json={"items": [{"text": "Rob Smith and Anna Lee in New York "
                                                                          "with Real Madrid", "image": _b64(_jpeg())}]})
    for entity in answer.json()["items"][0]["entities"]:
        assert [len(m) for m in entity["word_attention"]] == [49] * (entity["end"] - entity["start"])
        assert entity["attention"] == entity["word_attention"][0]


def test_multipart_gives_what_json_gives(client):
    text, image = "Rob at the beach with Anna", _jpeg()
    by_json = client.post("/api/predict?attention=true", json={"items": [{"text": text, "image": _b64(image)}]})
    by_form = client.post("/api/predict?attention=true", data={"text": text},
                          files=[("image", ("beach.jpg", image, "image/jpeg"))])
    assert by_form.status_code == 200, by_form.text
    assert by_form.json() == by_json.json()
    item = by_form.json()["items"][0]
    assert item["view"].startswith("data:image/png;base64,")
    assert all(len(e["attention"]) == 49 for e in item["entities"])


def _good(client) -> None:
    answer = client.post("/api/predict", json={"items": [{"text": "still serving Rob", "image": _b64(_jpeg())}]})
    assert answer.status_code == 200, answer.text


def _truncated() -> bytes:
    return _jpeg(size=(200, 150))[:400]


BAD = {  # name: (request keyword arguments, status, part of the message)
    "not an image": ({"json": {"items": [{"text": "a b", "image": _b64(b"GIF89a not really")}]}}, 422,
                     "cannot be decoded"),
    "truncated JPEG": ({"json": {"items": [{"text": "a b", "image": _b64(_truncated())}]}}, 422, "cannot be decoded"),
    "zero bytes": ({"data": {"text": "a b"}, "files": [("image", ("empty.jpg", b"", "image/jpeg"))]}, 422,
                   "empty (0 bytes)"),
    "oversized file": ({"data": {"text": "a b"}, "files": [("image", ("big.jpg", b"\xff" * 300_000, "image/jpeg"))]},
                       413, "the limit is 200,000"),
    "decompression bomb": ({"json": {"items": [{"text": "a b", "image": _b64(_png_bomb())}]}}, 422,
                           "over the pixel limit"),
    "empty text": ({"json": {"items": [{"text": "  \n\t "}]}}, 422, "items.0.text: empty"),
    "50,000 characters": ({"json": {"items": [{"text": "word " * 10_000}]}}, 422,
                          "50,000 characters; the limit is 2,000"),
    "malformed JSON": ({"content": b'{"items": [{"text": "a"', "headers": {"content-type": "application/json"}}, 400,
                       "malformed JSON"),
    "wrong content type": ({"content": b"text=a", "headers": {"content-type": "text/plain"}}, 415,
                           "send application/json or multipart/form-data"),
    "not base64": ({"json": {"items": [{"text": "a", "image": "%%%"}]}}, 422, "items.0.image: not valid base64"),
    "no items": ({"json": {"items": []}}, 422, "at least one tweet"),
    "lone surrogate": ({"content": b'{"items": [{"text": "Rob \\ud800 Paris"}]}',
                        "headers": {"content-type": "application/json"}}, 422,
                       "items.0.text: not valid Unicode (a lone surrogate at character 4)"),
    "text not a string": ({"json": {"items": [{"text": 5}]}}, 422, "items.0.text"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(client, name):
    kwargs, status, message = BAD[name]
    answer = client.post("/api/predict", **kwargs)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["detail"] and "\n" not in answer.json()["detail"]
    _good(client)


def test_a_decompression_bomb_gets_status_too_large(client):
    answer = client.post("/api/predict", json={"items": [{"text": "a b", "image": _b64(_png_bomb())}]})
    assert answer.json()["image_status"] == "too_large"


@pytest.mark.parametrize("text", ["😂😂 Rob 🇺🇸 in مرحبا Paris \u200f", "Rob\x01 went\x7f to \u200b Paris",
                                  "Ｒｏｂ \ufeff東京 \u2028 Anna"])
def test_emoji_rtl_and_control_characters_are_tagged_word_by_word(client, text):
    answer = client.post("/api/predict", json={"items": [{"text": text, "image": _b64(_jpeg())}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["items"][0]["words"] == text.split()


def test_a_one_pixel_image_is_an_image(client):
    out = io.BytesIO()
    Image.new("RGB", (1, 1), (9, 99, 199)).save(out, "PNG")
    answer = client.post("/api/predict", json={"items": [{"text": "Rob in Paris", "image": _b64(out.getvalue())}]})
    assert answer.status_code == 200 and answer.json()["items"][0]["image_status"] == "ok"


def test_a_body_over_the_limit_is_refused_before_it_is_read(client):
    declared = client.post("/api/predict", json={"items": [{"text": "a " * 150_000}]})
    assert declared.status_code == 413 and "the limit is 200,000" in declared.json()["detail"]

    def chunks():
        for _ in range(50):
            yield b"x" * 10_000

    streamed = client.post("/api/predict", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    _good(client)


def test_too_many_items_are_refused(client):
    answer = client.post("/api/predict", json={"items": [{"text": "a"}] * 65})
    assert answer.status_code == 422 and "65 tweets in one request; the limit is 64" in answer.json()["detail"]


def test_a_full_queue_answers_503_with_retry_after(served_runs):
    app = build(served_runs["maf"], limits=Limits(queue=1, batch_wait=0.001), device="cpu")
    engine = app.state.engine
    answers = []
    body = {"items": [{"text": "Rob", "image": _b64(_jpeg())}]}
    with TestClient(app, base_url="http://127.0.0.1:7860") as client:
        with engine.lock:  # the model is busy: the first request waits in the worker, the second in the queue
            first = threading.Thread(target=lambda: answers.append(client.post("/api/predict", json=body)))
            first.start()
            _wait(lambda: engine.batcher.waiting() == 0 and engine.batcher.busy)
            second = threading.Thread(target=lambda: answers.append(client.post("/api/predict", json=body)))
            second.start()
            _wait(lambda: engine.batcher.waiting() == 1)
            refused = client.post("/api/predict", json=body)
        first.join(30)
        second.join(30)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "requests are waiting already" in refused.json()["detail"]
    assert [a.status_code for a in answers] == [200, 200]


def test_concurrent_requests_run_as_one_batch(app, client):
    engine = app.state.engine
    before = engine.batcher.batches
    answers = []
    body = {"items": [{"text": "Rob at the beach", "image": _b64(_jpeg())}]}

    def send() -> threading.Thread:
        thread = threading.Thread(target=lambda: answers.append(client.post("/api/predict", json=body)))
        thread.start()
        return thread

    threads = []
    try:
        with engine.lock:  # the model is busy: one request waits in the worker, four gather in the queue
            threads.append(send())
            _wait(lambda: engine.batcher.busy and engine.batcher.waiting() == 0)
            threads += [send() for _ in range(4)]
            _wait(lambda: engine.batcher.waiting() == 4)
    finally:
        for thread in threads:
            thread.join(30)
    assert [a.status_code for a in answers] == [200] * 5
    assert engine.batcher.batches - before == 2  # the first alone, then the four (image_chunk) together
    # the same answer for each, whether computed alone or in the batch of four; p only up to
    # float rounding, as a batch of 4 may take another matrix kernel than a batch of 1
    items = [a.json()["items"][0] for a in answers]
    assert len({json.dumps({k: v for k, v in item.items() if k not in ("p", "match_prob")}) for item in items}) == 1
    assert max(item["match_prob"] for item in items) - min(item["match_prob"] for item in items) < 1e-5


def _wait(condition, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# the page and the docs make no request off the machine


def test_the_page_loads_nothing_from_elsewhere(client):
    page = client.get("/")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC / name).read_text()
        assert "http://" not in text and "https://" not in text, name


def test_api_docs_come_from_this_server(client):
    docs = client.get("/docs").text
    sources = re.findall(r'(?:src|href)="([^"]+)"', docs)
    assert sources and all(s.startswith("/") for s in sources), sources
    assert '"validatorUrl": null' in docs
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert body["application/json"]["schema"]["properties"]["items"]["items"]["required"] == ["text"]
    refs = re.findall(r'"\$ref": "([^"]+)"', json.dumps(schema))
    assert refs and all(r.removeprefix("#/components/schemas/") in schema["components"]["schemas"] for r in refs)
    for path in ("static-offline-docs/swagger-ui-bundle.js", "static-offline-docs/swagger-ui.css"):
        assert client.get(f"/{path}").status_code == 200


def _bare_app():
    from fastapi import FastAPI

    from maf_core.serve import Access

    app = FastAPI()
    app.state.access = Access()
    return app


def test_serving_off_loopback_warns_and_prints_the_token(monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: [s.close() for s in sockets])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    said = []
    app = _bare_app()
    serve(app, "0.0.0.0", port, announce=said.append)
    assert said[0].startswith(f"warning: serving on 0.0.0.0, not loopback: anyone who can reach 0.0.0.0:{port} and")
    token = app.state.access.token
    assert len(token) >= 32 and said[1] == (f"maf serve: http://{socket.gethostname()}:{port}/?token={token}  "
                                            "(API docs: /docs; Ctrl-C stops)")
    said.clear()
    app = _bare_app()
    serve(app, "127.0.0.1", port, announce=said.append)
    assert said == [f"maf serve: http://127.0.0.1:{port}/  (API docs: /docs; Ctrl-C stops)", "maf serve: stopped"]
    assert app.state.access.token is None


@pytest.mark.slow
def test_the_command_prints_its_address_serves_and_stops_on_ctrl_c(served_runs):
    import os
    import signal
    import subprocess
    import sys

    import httpx

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    process = subprocess.Popen([sys.executable, "-m", "cli.maf", "serve", str(served_runs["maf"]), "--port", "0"],
                               cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        address = re.match(r"maf serve: (http://127\.0\.0\.1:\d+/)  \(API docs: /docs; Ctrl-C stops\)$", line.strip())
        assert address, line
        assert httpx.get(address.group(1) + "api/health", timeout=30).json()["status"] == "ok"
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0 and out.strip() == "maf serve: stopped"


def test_a_port_in_use_is_an_error_of_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DataError, match=f"--host 127.0.0.1 --port {port}: cannot listen there"):
            serve(_bare_app(), "127.0.0.1", port, announce=lambda line: None)


# micro-batching


def test_concurrent_requests_share_a_forward():
    calls = []
    gate = threading.Event()

    def run(items):
        gate.wait(10)
        calls.append(len(items))
        return [item * 2 for item in items]

    batcher = MicroBatcher(run, max_items=8, max_wait=0.05, max_queue=16)
    futures = [batcher.submit([n, n + 100]) for n in range(6)]  # 12 items: 4 requests, then 2
    gate.set()
    assert [f.result(10) for f in futures] == [[2 * n, 2 * n + 200] for n in range(6)]
    assert sum(calls) == 12 and max(calls) <= 8 and len(calls) < 6
    batcher.close()


def test_a_failing_request_fails_alone():
    def run(items):
        if "bad" in items:
            raise ValueError("bad item")
        return items

    batcher = MicroBatcher(run, max_items=8, max_wait=0.05)
    futures = [batcher.submit(["a"]), batcher.submit(["bad"]), batcher.submit(["c"])]
    assert futures[0].result(10) == ["a"] and futures[2].result(10) == ["c"]
    with pytest.raises(ValueError, match="bad item"):
        futures[1].result(10)
    batcher.close()


def test_a_full_batcher_refuses_at_once():
    gate = threading.Event()
    batcher = MicroBatcher(lambda items: (gate.wait(10), items)[1], max_items=1, max_wait=0, max_queue=1)
    first = batcher.submit(["a"])
    _wait(lambda: batcher.waiting() == 0)
    batcher.submit(["b"])
    with pytest.raises(QueueFull, match="1 requests are waiting already"):
        batcher.submit(["c"])
    gate.set()
    assert first.result(10) == ["a"]
    batcher.close()


# images in memory, as extraction makes them


def test_images_in_memory_get_the_features_and_statuses_of_extraction(sample_dir, sample_store, tmp_path):
    store = FeatureStore(sample_store)
    bad = [i for i, code in zip(store.image_ids, store.status) if code != 0]
    assert bad, "the sample corpus has missing and broken images"
    ids = store.image_ids[:8] + bad[:4]
    config = extract_config_of(store.fingerprint)
    featurizer = ImageFeaturizer(config)
    folder = sample_dir / "images"
    files = {i: next((p.read_bytes() for p in folder.glob(f"{i}.*")), None) for i in ids}
    memory = MemoryStore(featurizer.extract(list(files.items())), featurizer.fingerprint)
    got, want = memory.gather(ids), store.gather(ids)
    assert got.status.tolist() == want.status.tolist() and (want.status != 0).any()
    np.testing.assert_allclose(got.pooled, want.pooled, atol=1e-5)
    np.testing.assert_allclose(got.regions.astype(np.float32), want.regions.astype(np.float32), atol=2e-3)
    again = tmp_path / "again.h5"
    extract_images(folder, again, config, ids=ids)
    assert FeatureStore(again).fingerprint == featurizer.fingerprint


def test_words_past_the_run_s_length_are_reported_untagged(client, served_runs):
    max_length = json.loads((served_runs["maf"] / "config.json").read_text())["max_length"]
    words = ["a"] * (max_length + 40)  # one piece each: [CLS], max_length - 2 words, [SEP]
    answer = client.post("/api/predict", json={"items": [{"text": " ".join(words)}, {"text": "Rob in Paris"}]})
    long, short = answer.json()["items"]
    assert long["untagged"] == len(words) - (max_length - 2) and short["untagged"] == 0
    assert set(long["tags"][-long["untagged"]:]) == {"O"}


def test_the_page_is_told_which_words_of_a_tweet_were_past_the_run_s_length(served_runs, sample_dir, tokenizer_dir,
                                                                           tmp_path):
    from pipeline.tokenization import read_split, tokenize_corpus

    short = tmp_path / "text"  # the same corpus cut at 12 pieces, so that some words are past the length
    tokenize_corpus(sample_dir, str(tokenizer_dir), short, max_length=12)
    counts = [sum(s < 0 for s in starts) for starts in read_split(short, "test").to_pydict()["word_starts"]]
    assert sum(counts) > 0
    assert [t["untagged"] for t in Browse(served_runs["maf"], text_dir=short).payload()["tweets"]] == counts
    assert all(t["untagged"] == 0 for t in Browse(served_runs["maf"]).payload()["tweets"])  # 64 pieces: none


def test_report_s_cases_draw_every_word_of_an_entity_on_the_page_s_scale(served_runs, sample_dir, tmp_path,
                                                                           monkeypatch):
    """`maf report`'s cases.png, like the page: a heatmap per word of each predicted entity, all
    on one scale (0 to the largest weight, at least 2/49) with its colour bar. The tiny run tags
    one-word entities only, so each tweet is given a three-word entity and a one-word one."""
    import maf_core.report as report

    figures = []

    def keep(plt, fig, target, dpi=110):
        figures.append(fig)
        fig.canvas.draw()
        return target

    monkeypatch.setattr(report, "_save", keep)
    monkeypatch.setattr(report, "get_entities", lambda tags: [("PER", 0, 3), ("LOC", 3, 4)])
    run = report.load_runs([served_runs["maf"]])[0]
    store = FeatureStore(json.loads((served_runs["maf"] / "config.json").read_text())["features"])
    rows = [r for r in run.predictions if len(r["words"]) >= 4 and store.status[store.rows[str(r["id"])]] == 0][:2]
    assert report.case_study(run, tmp_path, ids=[str(r["id"]) for r in rows], images_dir=sample_dir / "images") \
        == tmp_path / "cases.png"
    (fig,) = figures
    drawn = [ax for ax in fig.axes if any(image.get_cmap().name == "jet" for image in ax.get_images())]
    expected = [title for w in (r["words"] for r in rows)
                for title in [f"{w[k]} ({' '.join(w[:3])} → PER)" for k in range(3)] + [f"{w[3]} → LOC"]]
    assert [ax.get_title() for ax in drawn] == expected
    heat = [image for ax in drawn for image in ax.get_images() if image.get_cmap().name == "jet"]
    assert len({image.get_clim() for image in heat}) == 1  # one scale
    low, top = heat[0].get_clim()
    assert low == 0 and top == pytest.approx(max([2 / 49] + [float(i.get_array().max()) for i in heat]))
    assert len({json.dumps(i.get_array().tolist()) for i in heat[:3]}) == 3  # each word its own map
    assert "each word of each predicted entity" in fig._suptitle.get_text()


def test_maf_predict_reports_the_words_past_the_run_s_length_as_the_api_does(client, predictor, served_runs,
                                                                              tmp_path):
    """`untagged` per tweet in MAFPredictor's and `maf predict`'s output, equal to the API's, and
    one line from the command when a tweet was cut (none when no tweet was)."""
    from click.testing import CliRunner

    from cli.maf import main as maf

    max_length = predictor.max_length
    assert max_length == json.loads((served_runs["maf"] / "config.json").read_text())["max_length"]
    texts = [" ".join(["a"] * (max_length + 7)), "Rob in Paris", " ".join(["a"] * (max_length + 1))]
    features = json.loads((served_runs["maf"] / "config.json").read_text())["features"]
    image = FeatureStore(features).image_ids[0]
    records = predictor.predict([{"id": str(n), "text": t, "image": image} for n, t in enumerate(texts)],
                                features=features)
    api = client.post("/api/predict", json={"items": [{"text": t} for t in texts]}).json()["items"]
    assert [r["untagged"] for r in records] == [item["untagged"] for item in api] == [9, 0, 3]  # [CLS], [SEP]
    assert all(set(r["tags"][len(r["tags"]) - r["untagged"]:]) <= {"O"} for r in records)
    for chosen, note in ((texts, f"note: 2 of 3 tweets are longer than the run's {max_length} pieces: their last 12 "
                                 "words in all were not seen and are tagged O (\"untagged\" per tweet)"),
                         (texts[1:2], None)):
        tweets, out = tmp_path / "tweets.jsonl", tmp_path / "out.jsonl"
        tweets.write_text("".join(json.dumps({"id": str(n), "text": t, "image": image}) + "\n"
                                  for n, t in enumerate(chosen)))
        done = CliRunner().invoke(maf, ["predict", str(served_runs["maf"]), "--input", str(tweets), "--features",
                                        features, "--out", str(out)])
        assert done.exit_code == 0, done.output
        by_text = {text: r["untagged"] for text, r in zip(texts, records)}
        assert [r["untagged"] for r in _rows(out)] == [by_text[t] for t in chosen]
        lines = [line for line in done.output.splitlines() if "untagged" in line]
        assert lines == ([note] if note else [])
