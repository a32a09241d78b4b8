from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest

from pipeline.conll import read_conll
from pipeline.errors import DataError
from pipeline.sample import AMBIGUOUS, CUE_CLASSES, generate_tweets, make_sample
from pipeline.schemes import get_entities


def digest(directory):
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(directory)).encode() + path.read_bytes())
    return h.hexdigest()


def annotations(data_dir):
    return [json.loads(line) for line in (data_dir / "annotations.jsonl").read_text(encoding="utf-8").splitlines()]


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    make_sample(tmp_path / "a", tweets=40, seed=7)
    make_sample(tmp_path / "b", tweets=40, seed=7)
    make_sample(tmp_path / "c", tweets=40, seed=8)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_layout_and_annotations_agree_with_the_corpus(sample_dir):
    notes = {(n["split"], n["image_id"]): n for n in annotations(sample_dir)}
    total = 0
    for split in ("train", "valid", "test"):
        for tweet in read_conll(sample_dir / f"{split}.txt"):
            total += 1
            note = notes[(split, tweet.image_id)]
            image = sample_dir / "images" / f"{tweet.image_id}.jpg"
            assert image.exists() == (note["image_file"] != "missing")
            for decided in note["image_decided"]:  # image-decided entities are real, ambiguous chunks
                span = (decided["type"], decided["start"], decided["end"])
                assert span in get_entities(tweet.labels)
                assert decided["text"] in AMBIGUOUS
                assert note["relation"] == "matched" and note["image_file"] == "ok"
                assert note["image_class"] == CUE_CLASSES[decided["type"]]
    assert total == len(notes) == 150


@pytest.fixture(scope="module")
def generated():
    """3,000 tweets of the recipe, seed 0 (no files)."""
    return generate_tweets(3000, seed=0)


def test_about_a_third_of_the_images_are_unrelated(generated):
    relation = Counter(s.relation for s in generated)
    assert 0.28 < relation["unrelated"] / 3000 < 0.39  # about a third, as on real Twitter data


def test_about_35_percent_of_tweets_are_image_decided(generated):
    decided = sum(bool(s.image_decided) for s in generated)
    assert 0.30 < decided / 3000 < 0.40


def test_a_few_images_are_missing_or_broken(generated):
    files = Counter(s.image_file for s in generated)
    assert 0 < files["missing"] < 0.04 * 3000 and 0 < files["broken"] < 0.04 * 3000


def test_every_type_is_often_image_decided(generated):
    decided = sum(bool(s.image_decided) for s in generated)
    types = Counter(t for s in generated for t, _, _ in s.image_decided)
    assert set(types) == set(CUE_CLASSES) and min(types.values()) > 0.2 * decided


def test_an_ambiguous_name_alone_never_tells_its_type(generated):
    by_name = {}  # each ambiguous name is seen with several types
    for s in generated:
        for t, start, end in s.image_decided:
            by_name.setdefault(" ".join(s.tweet.words[start:end]), set()).add(t)
    assert all(len(kinds) >= 3 for kinds in by_name.values())


def test_broken_images_do_not_open(sample_dir):
    from PIL import Image

    broken = [n for n in annotations(sample_dir) if n["image_file"] == "broken"]
    assert broken
    for note in broken:
        with pytest.raises((OSError, SyntaxError, ValueError)):  # PIL's errors for broken files
            with Image.open(sample_dir / "images" / f"{note['image_id']}.jpg") as image:
                image.load()


def test_refuses_non_empty_output(sample_dir):
    before = digest(sample_dir)
    with pytest.raises(DataError, match="exists and is not empty; pass --overwrite"):
        make_sample(sample_dir, tweets=20)
    assert digest(sample_dir) == before


def test_refuses_too_few_tweets_for_three_splits(tmp_path):
    with pytest.raises(DataError, match="too few"):
        make_sample(tmp_path / "x", tweets=3)


@pytest.mark.slow
def test_random_frozen_resnet152_tells_the_image_classes_apart(tmp_path):
    """The deciding image classes must be separable without pretrained weights, by the demo's
    backbone: the pipeline's random ResNet-152 (`--weights none`) with BatchNorm statistics
    re-estimated on the images (`--bn-stats dataset`, AdaBN), frozen in eval mode. A
    nearest-centroid classifier on its pooled features, fitted on half the images and scored
    on the other half, over every class (the cue classes and the unrelated ones). Images are
    112x112 instead of 224 to keep the test quick.
    """
    import torch

    from pipeline.backbone import ResNetFeatures, estimate_bn_stats, resolve_weights
    from pipeline.images import Transform, decode, normalise

    data = tmp_path / "s"
    make_sample(data, tweets=160, seed=1)
    notes = [n for n in annotations(data) if n["image_file"] == "ok"]
    classes = sorted({n["image_class"] for n in notes})
    assert set(CUE_CLASSES.values()) <= set(classes)
    transform = Transform("resize", size=112)
    images = normalise(torch.from_numpy(np.stack([
        transform(decode((data / "images" / f"{n['image_id']}.jpg").read_bytes()), n["image_id"]) for n in notes
    ])))
    labels = torch.tensor([classes.index(n["image_class"]) for n in notes])
    state, _ = resolve_weights("resnet152", "none", seed=0)
    model = ResNetFeatures("resnet152")
    model.load_state_dict(state)
    estimate_bn_stats(model, images[:128].split(32))
    with torch.inference_mode():
        features = torch.cat([model(batch)[1] for batch in images.split(32)])
    fit, held = torch.arange(len(notes)) % 2 == 0, torch.arange(len(notes)) % 2 == 1
    mean, std = features[fit].mean(0), features[fit].std(0) + 1e-6
    features = (features - mean) / std
    centroids = torch.stack([features[fit & (labels == c)].mean(0) for c in range(len(classes))])
    predicted = torch.cdist(features[held], centroids).argmin(1)
    accuracy = (predicted == labels[held]).float().mean().item()
    assert accuracy > 0.9, f"held-out accuracy {accuracy:.3f} over {int(held.sum())} images, {len(classes)} classes"


def test_random_weights_start_every_residual_block_as_the_identity():
    import torch

    from pipeline.backbone import ResNetFeatures, resolve_weights

    state, identity = resolve_weights("resnet18", "none", seed=3)
    assert identity == {"kind": "random", "identity": "random:3:zero-residual"}
    model = ResNetFeatures("resnet18")
    model.load_state_dict(state)
    model.eval()
    block = model.body[5][1]  # layer2's second block: no downsampling, so identity means x -> relu(x)
    x = torch.randn(2, 128, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))
    assert state["body.4.0.conv1.weight"].abs().sum() > 0  # the branches themselves are random
