"""The fingerprint rules (pipeline/fingerprint.py): its inverse gives back the settings a store
was made with, and stores and shards are reused across library versions, with a warning."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from maf_core.config import MAFConfig
from maf_core.predict import MAFPredictor
from maf_core.train import TrainConfig, train
from pipeline.backbone import random_identity
from pipeline.errors import DataError
from pipeline.extract import ExtractConfig, extract_images, ids_from_corpus
from pipeline.fingerprint import extract_config_of, fingerprint, store_differences
from pipeline.sample import make_sample
from pipeline.store import FeatureStore
from pipeline.tokenization import tokenize_corpus

TINY = dict(backbone="resnet18", weights="none", workers=0, batch_size=4, shard_size=4)
IMAGENET = {"kind": "imagenet", "identity": "sha256:0123"}


@pytest.mark.parametrize("settings, identity", [
    (dict(), IMAGENET),
    (dict(decode="fast"), IMAGENET),
    (dict(decode="device"), IMAGENET),
    (dict(transform="maf-crop", seed=5), IMAGENET),
    (dict(bn_stats="dataset", bn_samples=32, seed=3), IMAGENET),
    (dict(seed=7), {"kind": "random", "identity": random_identity(7)}),
    (dict(channels_last=False, max_pixels=10**6), IMAGENET),
    (dict(precision="bf16", device="cuda"), IMAGENET),
])
def test_the_inverse_gives_back_every_setting_of_the_fingerprint(settings, identity):
    made = fingerprint(ExtractConfig(**settings), identity)
    config = extract_config_of(made, bn_buffers={} if settings.get("bn_stats") == "dataset" else None)
    assert fingerprint(config, identity) == made


def test_the_inverse_asks_for_what_the_fingerprint_does_not_hold():
    made = fingerprint(ExtractConfig(), {"kind": "file", "identity": "sha256:ab", "file": "resnet152-x.pth"})
    with pytest.raises(DataError, match=r"the store was made with backbone weights from resnet152-x\.pth; pass that"):
        extract_config_of(made)
    assert extract_config_of(made, weights="/w/resnet152-x.pth").weights == "/w/resnet152-x.pth"
    adabn = fingerprint(ExtractConfig(bn_stats="dataset"), IMAGENET)
    with pytest.raises(DataError, match=r"re-estimated on its images \(--bn-stats dataset\)"):
        extract_config_of(adabn)


def test_a_run_on_a_device_decoded_store_predicts_new_images(tokenizer_dir, tmp_path):
    """--decode device on the CPU (torchvision's libjpeg-turbo): new images are extracted with
    the run's decoder, so they match the run's store and give the run's own predictions."""
    corpus, text, store, run = tmp_path / "corpus", tmp_path / "text", tmp_path / "device.h5", tmp_path / "run"
    make_sample(corpus, tweets=40, seed=4)
    tokenize_corpus(corpus, str(tokenizer_dir), text, max_length=64)
    extract_images(corpus / "images", store, ExtractConfig(**dict(TINY, shard_size=64), decode="device"),
                   ids=ids_from_corpus(corpus))
    train(FeatureStore(store), text, run, MAFConfig.tiny(scheme="bioes"),
          TrainConfig(epochs=1, batch_size=16, lr=1e-3, seed=3, device="cpu"))
    expected = [json.loads(x) for x in (run / "predictions" / "test.jsonl").read_text().splitlines()]
    items = [{"id": r["id"], "words": r["words"]} for r in expected]
    predicted = MAFPredictor.from_pretrained(run).predict(items, images_dir=corpus / "images")
    assert [p["tags"] for p in predicted] == [r["predicted"] for r in expected]
    for p, r in zip(predicted, expected):
        assert abs(p["match_prob"] - r["match_prob"]) < 1e-5


def _images(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(folder / f"img{i}.jpg")
    return folder


def _other_versions(made: dict) -> dict:
    return {**made, "versions": {"torch": "2.0.0", "torchvision": "0.15.0", "pillow": "9.0.0"}}


def test_a_complete_store_of_other_library_versions_is_reused_with_a_warning(tmp_path, caplog):
    images, out = _images(tmp_path / "images", 3), tmp_path / "store.h5"
    extract_images(images, out, ExtractConfig(**TINY))
    with h5py.File(out, "r+") as f:
        f.attrs["fingerprint"] = json.dumps(_other_versions(json.loads(f.attrs["fingerprint"])), sort_keys=True)
    before = out.stat().st_mtime_ns
    with caplog.at_level("WARNING"):
        again = extract_images(images, out, ExtractConfig(**TINY))
    assert again["reused_store"] and out.stat().st_mtime_ns == before
    assert "'torch': '2.0.0'" in caplog.text and "features may differ in the last digits" in caplog.text


def test_shards_of_other_library_versions_finish_the_store_with_a_warning(tmp_path, caplog):
    images, out = _images(tmp_path / "images", 6), tmp_path / "store.h5"
    (images / "img5.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="shards stay in"):
        extract_images(images, out, ExtractConfig(**TINY, missing="fail"))
    job = out.with_name("store.h5.work") / "job.json"
    record = json.loads(job.read_text())
    job.write_text(json.dumps({**record, "fingerprint": _other_versions(record["fingerprint"])}))
    with caplog.at_level("WARNING"):
        summary = extract_images(images, out, ExtractConfig(**TINY))
    assert summary["extracted"] == 0 and summary["counts"] == {"ok": 5, "unreadable": 1}
    assert "'torch': '2.0.0'" in caplog.text


def test_other_settings_still_differ_whatever_the_versions():
    made = fingerprint(ExtractConfig(), IMAGENET)
    assert store_differences(_other_versions(made), made) == ""
    assert store_differences(_other_versions(made), fingerprint(ExtractConfig(decode="fast"), IMAGENET)) == \
        "decode: None there, 'fast-jpeg-draft' now"
    assert store_differences({**made, "channels_last": not made["channels_last"]}, made) == ""
