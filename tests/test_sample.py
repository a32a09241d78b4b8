from __future__ import annotations

import hashlib
import json
from collections import Counter

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


def test_proportions_match_the_recipe():
    samples = generate_tweets(3000, seed=0)
    relation = Counter(s.relation for s in samples)
    files = Counter(s.image_file for s in samples)
    decided = sum(bool(s.image_decided) for s in samples)
    assert 0.28 < relation["unrelated"] / 3000 < 0.39  # about a third, as on real Twitter data
    assert 0.30 < decided / 3000 < 0.40
    assert 0 < files["missing"] < 0.04 * 3000 and 0 < files["broken"] < 0.04 * 3000
    types = Counter(t for s in samples for t, _, _ in s.image_decided)
    assert set(types) == set(CUE_CLASSES) and min(types.values()) > 0.2 * decided
    # an ambiguous name alone never tells its type: each is seen with several types
    by_name = {}
    for s in samples:
        for t, start, end in s.image_decided:
            by_name.setdefault(" ".join(s.tweet.words[start:end]), set()).add(t)
    assert all(len(kinds) >= 3 for kinds in by_name.values())


def test_broken_images_do_not_open(sample_dir):
    from PIL import Image

    broken = [n for n in annotations(sample_dir) if n["image_file"] == "broken"]
    assert broken
    for note in broken:
        with pytest.raises(Exception):
            with Image.open(sample_dir / "images" / f"{note['image_id']}.jpg") as image:
                image.load()


def test_refuses_non_empty_output(sample_dir, tmp_path):
    before = digest(sample_dir)
    with pytest.raises(DataError, match="exists and is not empty; pass --overwrite"):
        make_sample(sample_dir, tweets=20)
    assert digest(sample_dir) == before
    with pytest.raises(DataError, match="too few"):
        make_sample(tmp_path / "x", tweets=3)


@pytest.mark.slow
def test_random_frozen_cnn_tells_the_cue_classes_apart(tmp_path):
    """The deciding image classes must be separable without pretrained weights.

    A randomly initialised ResNet-18 with BatchNorm statistics re-estimated on the images
    (AdaBN), then frozen in eval mode; a nearest-centroid classifier on its pooled
    features, fitted on half the images and scored on the other half.
    """
    import torch
    import torchvision
    from PIL import Image

    data = tmp_path / "s"
    make_sample(data, tweets=400, seed=1)
    notes = [n for n in annotations(data) if n["image_file"] == "ok" and n["image_class"] in CUE_CLASSES.values()]
    classes = sorted(CUE_CLASSES.values())
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def load(note):
        image = Image.open(data / "images" / f"{note['image_id']}.jpg").convert("RGB").resize((112, 112))
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(112, 112, 3)
        return (pixels.permute(2, 0, 1).float() / 255 - mean) / std

    images = torch.stack([load(n) for n in notes])
    labels = torch.tensor([classes.index(n["image_class"]) for n in notes])
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    model.fc = torch.nn.Identity()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches
    with torch.no_grad():
        model.train()
        for batch in images.split(64):
            model(batch)
        model.eval()
        features = torch.nn.functional.normalize(model(images), dim=1)
    fit, held = torch.arange(len(notes)) % 2 == 0, torch.arange(len(notes)) % 2 == 1
    centroids = torch.stack([features[fit & (labels == c)].mean(0) for c in range(len(classes))])
    predicted = (features[held] @ centroids.T).argmax(1)
    accuracy = (predicted == labels[held]).float().mean().item()
    print(f"held-out accuracy {accuracy:.3f}")
    assert accuracy > 0.9, accuracy
