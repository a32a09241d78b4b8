"""CM must learn image-text agreement, never a shortcut (length, padding, text against text).

Two detectors:
- which rows become negatives must not depend on their length (data order, `choose_negatives`);
- a shortcut detector: CM trained on images that carry no information must not tell true
  pairs from negatives on held-out tweets, for every combination of its settings that
  `MAFConfig.validate()` accepts and for every preset; as a positive control, the
  combinations meant to learn must tell them apart when the image shows what the text names.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
import torch

from maf_core.config import MAFConfig
from maf_core.data import bucketed_batches
from maf_core.matching import CrossModalMatching, choose_negatives
from maf_core.metrics import auc
from maf_core.model import MAF

TAGS = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
CLASSES = 4           # kinds of picture; token CLASS_TOKEN + c names class c in a tweet
CLASS_TOKEN = 10


def length_negative_auc(mode: str, by_length: bool, epochs: int = 3, batches=bucketed_batches) -> float:
    """AUC of a tweet's length relative to its batch (its length minus the batch's mean) as a
    predictor of 'is a CM negative', over epochs of a length-skewed corpus batched as the
    trainer does."""
    g = torch.Generator().manual_seed(0)
    lengths = (torch.distributions.Gamma(2.0, 0.1).sample((2000,)).long() + 5).clamp(max=120).tolist()
    negatives, positives = [], []
    for epoch in range(epochs):
        for rows in batches(lengths, 32, shuffle=True, seed=epoch, by_length=by_length):
            mean = sum(lengths[r] for r in rows) / len(rows)
            _, negative = choose_negatives(torch.ones(len(rows), dtype=torch.bool), 8, mode, g)
            for row, is_negative in zip(rows, negative.tolist()):
                (negatives if is_negative else positives).append(lengths[row] - mean)
    return auc(negatives, positives)


@pytest.mark.parametrize("mode", ["pairs", "tail"])
@pytest.mark.parametrize("by_length", [True, False])
def test_length_does_not_predict_being_a_negative(mode, by_length):
    assert 0.45 <= length_negative_auc(mode, by_length) <= 0.55


def test_sorted_rows_would_make_the_longest_tweets_the_negatives():
    """The detector above can fail: with rows sorted by length inside each batch (the old
    order), `tail` swaps the longest tweets of every batch."""
    def sorted_rows(lengths, *args, **kwargs):
        return [sorted(rows, key=lambda i: lengths[i]) for rows in bucketed_batches(lengths, *args, **kwargs)]

    assert length_negative_auc("tail", by_length=True, batches=sorted_rows) > 0.7
    assert length_negative_auc("tail", by_length=False, batches=sorted_rows) > 0.7


@dataclass
class Tweets:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    word_starts: torch.Tensor
    word_mask: torch.Tensor
    tags: torch.Tensor
    regions: torch.Tensor
    pooled: torch.Tensor
    image_ok: torch.Tensor
    classes: torch.Tensor

    def rows(self, index) -> dict:
        fields = ("input_ids", "attention_mask", "word_starts", "word_mask", "tags", "regions", "pooled", "image_ok")
        return {name: getattr(self, name)[index] for name in fields}


def make_tweets(n: int, config: MAFConfig, informative: bool, seed: int) -> Tweets:
    """Tweets of 3..13 one-piece words with [CLS]/[SEP]; one word names a class (tag S-PER).
    Regions: pure noise, or (informative) the class's prototype plus noise."""
    g = torch.Generator().manual_seed(seed)
    length = config.max_length
    out = Tweets(input_ids=torch.zeros(n, length, dtype=torch.long),
                 attention_mask=torch.zeros(n, length, dtype=torch.long),
                 word_starts=torch.zeros(n, length - 2, dtype=torch.long),
                 word_mask=torch.zeros(n, length - 2, dtype=torch.bool),
                 tags=torch.zeros(n, length - 2, dtype=torch.long),
                 regions=torch.randn(n, config.num_regions, config.image_dim, generator=g),
                 pooled=torch.zeros(n, config.image_dim), image_ok=torch.ones(n, dtype=torch.bool),
                 classes=torch.randint(0, CLASSES, (n,), generator=g))
    prototypes = torch.randn(CLASSES, 1, config.image_dim, generator=torch.Generator().manual_seed(99)) * 2
    for i in range(n):
        words = int(torch.randint(3, length - 2, (1,), generator=g))
        ids = torch.randint(CLASS_TOKEN + CLASSES, config.vocab_size, (words,), generator=g)
        where = int(torch.randint(0, words, (1,), generator=g))
        ids[where] = CLASS_TOKEN + out.classes[i]
        out.input_ids[i, : words + 2] = torch.cat([torch.tensor([2]), ids, torch.tensor([3])])
        out.attention_mask[i, : words + 2] = 1
        out.word_starts[i, :words] = torch.arange(1, words + 1)
        out.word_mask[i, :words] = True
        out.tags[i, where] = TAGS.index("S-PER")
    if informative:
        out.regions = prototypes[out.classes] + 0.5 * out.regions
    out.pooled = out.regions.mean(1)
    return out


def train_matching(config: MAFConfig, data: Tweets, steps: int, seed: int = 0) -> MAF:
    torch.manual_seed(seed)
    model = MAF(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, foreach=True)  # the same update, all tensors at once
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, len(data.classes), (16,), generator=g)
        out = model(**data.rows(index), generator=g)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def held_out_auc(model: MAF, data: Tweets, other_class_only: bool) -> float:
    """p of true pairs against p of negatives made as in training (the config's `swap`), each
    tweet paired with the next one of its batch (with a different class, where asked)."""
    true_p, negative_p = [], []
    for start in range(0, len(data.classes), 64):
        index = torch.arange(start, min(start + 64, len(data.classes)))
        batch = data.rows(index)
        ids, mask = model._padded(batch["input_ids"], batch["attention_mask"])
        text, _ = model.encode_text(ids, mask)
        mask = mask.bool()
        image, _ = model.interaction(text, batch["regions"])
        permutation = torch.roll(torch.arange(len(index)), 1)
        if other_class_only:  # the nearest following row with another class
            classes = data.classes[index]
            for i in range(len(index)):
                j = next(
                    (j % len(index) for j in range(i + 1, i + len(index)) if classes[j % len(index)] != classes[i]), i
                )
                permutation[i] = j
        swapped, swapped_mask = model.swapped_image(text, image, batch["regions"], mask, permutation)
        keep = permutation != torch.arange(len(index))
        true_p += model.matching(text, image, mask)[0].tolist()
        negative_p += model.matching(text, swapped, mask, image_mask=swapped_mask)[0][keep].tolist()
    return auc(true_p, negative_p)


def accepted_combinations() -> list[dict]:
    combos = []
    for negatives, swap, head, ner_pairs in itertools.product(("pairs", "tail"), ("c", "image"), ("linear", "bilinear"),
                                                              ("swapped", "true")):
        values = dict(negatives=negatives, swap=swap, matching_head=head, ner_pairs=ner_pairs)
        try:
            tiny(**values)
        except ValueError:
            continue
        combos.append(values)
    return combos


def tiny(**values) -> MAFConfig:
    return MAFConfig.tiny(tags=TAGS, max_length=16, matching_pairs=4, **values)


def preset(name: str) -> MAFConfig:
    """A preset's CM, CI, CF and CRF settings at the tiny sizes."""
    base = MAFConfig.from_preset(name, bert_size="tiny")
    keep = ("negatives", "swap", "matching_head", "ner_pairs", "matching_positions", "matching_outputs", "init",
            "interaction_activation", "layer_norm_eps", "dropout_on", "fusion_image_bias", "crf_over", "loss_weighting",
            "temperature", "alignment_direction")
    return tiny(**{k: getattr(base, k) for k in keep})


def distinct_cases() -> dict[str, MAFConfig]:
    """Every accepted combination and every preset, each distinct setting once: at the tiny sizes
    a preset may equal a combination (paper, recommended), and the same config trains the same
    model, so it is trained once under a name that lists them all ("pairs-c-linear-swapped+preset-paper")."""
    named = [("-".join(c.values()), tiny(**c)) for c in accepted_combinations()]
    named += [(f"preset-{name}", preset(name)) for name in ("paper", "released-code", "recommended")]
    cases: list[tuple[str, MAFConfig]] = []
    for name, config in named:
        same = next((i for i, (_, other) in enumerate(cases) if other == config), None)
        if same is None:
            cases.append((name, config))
        else:
            cases[same] = (f"{cases[same][0]}+{name}", config)
    return dict(cases)


CASES = distinct_cases()


def test_every_combination_and_preset_is_a_case():
    names = {name for case in CASES for name in case.split("+")}
    assert names == {"-".join(c.values()) for c in accepted_combinations()} | \
        {f"preset-{name}" for name in ("paper", "released-code", "recommended")}


def test_validate_refuses_a_bilinear_head_on_swapped_c():
    assert len(accepted_combinations()) == 12  # 16 combinations less the 4 of bilinear with swap c
    with pytest.raises(ValueError, match="compare text with text"):
        tiny(matching_head="bilinear", swap="c")


@pytest.mark.slow
@pytest.mark.shortcuts
@pytest.mark.parametrize("name", sorted(CASES))
def test_matching_learns_no_shortcut_from_uninformative_images(name):
    config = CASES[name]
    model = train_matching(config, make_tweets(512, config, informative=False, seed=1), steps=600)
    value = held_out_auc(model, make_tweets(1024, config, informative=False, seed=2), other_class_only=False)
    assert 0.45 <= value <= 0.55, f"{name}: p separates true pairs from negatives on noise images (AUC {value:.3f})"


MEANT_TO_LEARN = sorted(name for name, c in CASES.items() if c.swap == "image")


@pytest.mark.slow
@pytest.mark.shortcuts
@pytest.mark.parametrize("name", MEANT_TO_LEARN)
def test_matching_learns_agreement_from_informative_images(name):
    """Positive control: where the image shows the class the text names, the combinations
    that pair T with another image (swap image) separate true pairs from negatives."""
    config = CASES[name]
    model = train_matching(config, make_tweets(512, config, informative=True, seed=1), steps=600)
    value = held_out_auc(model, make_tweets(512, config, informative=True, seed=2), other_class_only=True)
    assert value >= 0.9, f"{name}: p does not tell matching images from others (AUC {value:.3f})"


@pytest.mark.slow
@pytest.mark.shortcuts
def test_the_detector_finds_the_shortcuts_it_was_built_for(monkeypatch):
    """The detector can fail: with C^b masked by T^a's pieces (the old rule) a linear head
    learns "the lengths differ", and a bilinear head on swapped C compares text with text."""
    config = tiny(negatives="pairs")
    original = CrossModalMatching.logits
    monkeypatch.setattr(CrossModalMatching, "logits",
                        lambda self, text, image, mask, image_mask=None: original(self, text, image, mask, None))
    model = train_matching(config, make_tweets(512, config, informative=False, seed=1), steps=600)
    assert held_out_auc(model, make_tweets(1024, config, informative=False, seed=2), other_class_only=False) > 0.7
    monkeypatch.undo()
    monkeypatch.setattr(MAFConfig, "validate", lambda self: None)  # a combination validate() refuses
    config = tiny(matching_head="bilinear", swap="c")
    model = train_matching(config, make_tweets(512, config, informative=False, seed=1), steps=600)
    assert held_out_auc(model, make_tweets(1024, config, informative=False, seed=2), other_class_only=False) > 0.6
