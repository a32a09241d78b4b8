"""The MAF model: shapes, gradients, reference formulas, padding invariance, presets."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers import make_batch

from maf_core.alignment import CrossModalAlignment, contrastive_loss
from maf_core.config import MAFConfig
from maf_core.crf import CRF
from maf_core.fusion import CrossModalFusion
from maf_core.interaction import CrossModalInteraction
from maf_core.matching import CrossModalMatching, choose_negatives
from maf_core.model import MAF, count_parameters


def tiny_model(seed: int = 0, **overrides) -> MAF:
    torch.manual_seed(seed)
    return MAF(MAFConfig.tiny(**overrides))


# ---------------------------------------------------------------- shapes, module by module

TWEETS, PIECES = 5, 7  # b, length


@pytest.fixture(scope="module")
def cfg() -> MAFConfig:
    return MAFConfig.tiny()


@pytest.fixture(scope="module")
def text(cfg) -> torch.Tensor:
    return torch.randn(TWEETS, PIECES, cfg.hidden_size, generator=torch.Generator().manual_seed(0))  # T


@pytest.fixture(scope="module")
def interaction(cfg, text) -> tuple[torch.Tensor, torch.Tensor]:
    """CI on random T and regions: (C, attention weights)."""
    torch.manual_seed(0)
    regions = torch.randn(TWEETS, cfg.num_regions, cfg.image_dim)
    return CrossModalInteraction(cfg)(text, regions)


def test_interaction_gives_an_image_vector_per_piece(cfg, interaction):
    assert interaction[0].shape == (TWEETS, PIECES, cfg.hidden_size)


def test_interaction_attends_per_head_over_the_regions(cfg, interaction):
    weights = interaction[1]
    assert weights.shape == (TWEETS, cfg.heads, PIECES, cfg.num_regions)
    assert torch.allclose(weights.sum(-1), torch.ones(TWEETS, cfg.heads, PIECES))


def test_matching_gives_a_probability_per_tweet_and_a_scalar_loss(cfg, text, interaction):
    torch.manual_seed(0)
    mask = torch.ones(TWEETS, PIECES, dtype=torch.bool)
    p, loss = CrossModalMatching(cfg)(text, interaction[0], mask, negative=torch.zeros(TWEETS, dtype=torch.bool))
    assert p.shape == (TWEETS,) and loss.shape == () and ((p > 0) & (p < 1)).all()


def test_fusion_joins_text_and_image_to_twice_the_hidden_size(cfg, text, interaction):
    torch.manual_seed(0)
    assert CrossModalFusion(cfg)(text, interaction[0]).shape == (TWEETS, PIECES, 2 * cfg.hidden_size)


def test_alignment_loss_is_a_positive_scalar(cfg):
    torch.manual_seed(0)
    ca = CrossModalAlignment(cfg)(
        torch.randn(TWEETS, cfg.hidden_size), torch.randn(TWEETS, cfg.image_dim), torch.ones(TWEETS, dtype=torch.bool)
    )
    assert ca.shape == () and ca > 0


@pytest.fixture(scope="module")
def decoded() -> tuple[dict, object]:
    """The tiny MAF (train mode) on a batch of 8 tweets with tags, decoding: (batch, output)."""
    model = tiny_model()
    batch = make_batch(model.config)
    return batch, model(**batch, decode=True)


def test_model_scores_every_tag_for_every_word(cfg, decoded):
    batch, out = decoded
    assert out.emissions.shape == (8, batch["word_mask"].shape[1], cfg.num_tags)


def test_model_gives_a_match_probability_and_attention_per_tweet(cfg, decoded):
    out = decoded[1]
    assert out.match_prob.shape == (8,) and out.attention.shape[:2] == (8, cfg.heads)


def test_decoding_gives_one_tag_per_word(decoded):
    batch, out = decoded
    assert [len(t) for t in out.tags] == batch["word_mask"].sum(1).tolist()


def test_training_forward_returns_every_loss(decoded):
    out = decoded[1]
    assert all(x is not None for x in (out.loss, out.loss_ner, out.loss_ca, out.loss_cm))


# ---------------------------------------------------------------- behaviour


def test_gradients_reach_every_trainable_parameter():
    model = tiny_model()
    model.train()
    out = model(**make_batch(model.config, batch=8), generator=torch.Generator().manual_seed(1))
    out.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert missing == []


def test_alignment_loss_equals_the_per_example_formula():
    torch.manual_seed(0)
    n, d, tau, lam = 6, 5, 0.102, 0.7
    image, text = torch.randn(n, d), torch.randn(n, d)

    def sim(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    total = 0.0
    for i in range(n):
        v2t = -math.log(
            math.exp(sim(image[i], text[i]) / tau) / sum(math.exp(sim(image[i], text[j]) / tau) for j in range(n))
        )
        t2v = -math.log(
            math.exp(sim(text[i], image[i]) / tau) / sum(math.exp(sim(text[i], image[j]) / tau) for j in range(n))
        )
        total += lam * v2t + (1 - lam) * t2v
    assert abs(float(contrastive_loss(image, text, tau, lam)) - total / n) < 1e-5


def test_alignment_leaves_out_tweets_without_an_image():
    cfg = MAFConfig.tiny()
    torch.manual_seed(0)
    ca = CrossModalAlignment(cfg)
    text, image = torch.randn(5, cfg.hidden_size), torch.randn(5, cfg.image_dim)
    ok = torch.tensor([True, False, True, True, False])
    image_changed = image.clone()
    image_changed[~ok] = torch.randn(2, cfg.image_dim)
    assert torch.equal(ca(text, image, ok), ca(text, image_changed, ok))
    assert float(ca(text, image, torch.tensor([True, False, False, False, False])).detach()) == 0.0


def test_crf_likelihood_equals_brute_force_enumeration():
    """Rows of 3, 2, 1 and 0 words in one padded batch: each row's log-likelihood and Viterbi
    path equal enumeration over all paths of its own length."""
    torch.manual_seed(0)
    crf = CRF(3)
    emissions = torch.randn(4, 3, 3)
    tags = torch.tensor([[1, 2, 0], [2, 2, 1], [0, 1, 1], [0, 0, 0]])
    lengths = [3, 2, 1, 0]
    mask = torch.arange(3)[None] < torch.tensor(lengths)[:, None]

    def score(row, path):
        s = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
        s = s + sum(emissions[row, i, t] for i, t in enumerate(path))
        return s + sum(crf.transitions[a, b] for a, b in zip(path, path[1:]))

    llh = crf(emissions, tags, mask=mask, reduction="none")
    decoded = crf.decode(emissions, mask=mask)
    for row, n in enumerate(lengths):
        if n == 0:
            assert float(llh[row].detach()) == 0.0 and decoded[row] == []
            continue
        paths = list(itertools.product(range(3), repeat=n))
        log_z = torch.logsumexp(torch.stack([score(row, p) for p in paths]), 0)
        assert torch.allclose(llh[row], score(row, tags[row, :n].tolist()) - log_z, atol=1e-5)
        assert decoded[row] == list(max(paths, key=lambda p: float(score(row, p).detach())))
    assert torch.allclose(crf(emissions, tags, mask=mask, reduction="sum"), llh.sum())
    assert torch.allclose(crf(emissions, tags, mask=mask, reduction="mean"), llh.mean())
    llh.sum().backward()  # gradients reach all three parameter tensors
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in crf.parameters())


def test_crf_decodes_float64_emissions_in_float64():
    """Viterbi in the emissions' dtype: two paths 1e-12 apart are told apart in float64 (a cast
    to float32 made them equal and took the first), and a float64 CRF decodes random float64
    emissions as enumeration over all paths does."""
    crf = CRF(3)
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.zero_()
    close = torch.tensor([[[0.5, 0.5 + 1e-12, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    assert crf.decode(close) == [[1, 0]]

    torch.manual_seed(1)
    crf = CRF(3).double()
    emissions = torch.randn(2, 3, 3, dtype=torch.float64)

    def score(row, path):
        s = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
        s = s + sum(emissions[row, i, t] for i, t in enumerate(path))
        return s + sum(crf.transitions[a, b] for a, b in zip(path, path[1:]))

    paths = list(itertools.product(range(3), repeat=3))
    assert crf.decode(emissions) == [list(max(paths, key=lambda p: float(score(row, p).detach()))) for row in (0, 1)]


@pytest.mark.parametrize("variant", [{}, {"swap": "image", "matching_head": "bilinear"}])
def test_padding_does_not_change_anything(variant):
    model = tiny_model(**variant)
    model.train()  # with dropout 0 (tiny config): the CM negatives and losses are exercised
    short = make_batch(model.config, seed=4)
    long = make_batch(model.config, seed=4, pad_to=short["input_ids"].shape[1] + 5)
    a = model(**short, generator=torch.Generator().manual_seed(9))
    b = model(**long, generator=torch.Generator().manual_seed(9))
    for name in ("emissions", "match_prob", "loss", "loss_ner", "loss_ca", "loss_cm"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-5), name
    model.eval()
    a, b = model(**short), model(**long)
    assert torch.allclose(a.emissions, b.emissions, atol=1e-5) and torch.allclose(a.match_prob, b.match_prob, atol=1e-5)


def test_a_tweet_without_an_image_is_independent_of_image_features():
    model = tiny_model().eval()
    batch = make_batch(model.config, seed=2)
    batch["image_ok"][3] = False
    other = dict(batch, regions=batch["regions"].clone(), pooled=batch["pooled"].clone())
    other["regions"][3] = torch.randn_like(other["regions"][3]) * 10
    other["pooled"][3] = torch.randn_like(other["pooled"][3]) * 10
    a, b = model(**batch, decode=True), model(**other, decode=True)
    assert torch.equal(a.emissions[3], b.emissions[3]) and a.tags[3] == b.tags[3]
    assert float(a.match_prob[3]) == 0.0
    # the same tweet with its image counted as ok does depend on it
    batch["image_ok"][3] = other["image_ok"][3] = True
    assert not torch.allclose(model(**batch).emissions[3], model(**other).emissions[3])


def test_no_image_tweets_are_left_out_of_the_matching_loss():
    model = tiny_model().train()
    batch = make_batch(model.config, seed=5)
    batch["image_ok"][:4] = False
    other = dict(batch, regions=batch["regions"].clone())
    other["regions"][:4] = torch.randn_like(other["regions"][:4])
    a = model(**batch, generator=torch.Generator().manual_seed(0))
    b = model(**other, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(a.loss_cm, b.loss_cm) and torch.allclose(a.loss_ca, b.loss_ca)


@pytest.mark.parametrize("mode", ["pairs", "tail"])
def test_matching_marks_exactly_the_swapped_rows(mode):
    ok = torch.tensor([True, True, False, True, True, True, True, False, True, True])
    permutation, negative = choose_negatives(ok, 2, mode, torch.Generator().manual_seed(3))
    swapped = permutation != torch.arange(10)
    assert torch.equal(swapped, negative) and int(negative.sum()) == 4
    assert torch.equal(permutation[permutation], torch.arange(10))  # pairs exchange with each other
    assert not negative[~ok].any()
    if mode == "tail":
        assert negative.nonzero().flatten().tolist() == [5, 6, 8, 9]  # the last 4 rows with an image
    _, negative = choose_negatives(torch.tensor([True, True, False]), 15, mode)
    assert not negative.any()


def test_pairs_shrink_to_fit_a_small_batch():
    # k shrinks so that one positive remains; under 3 usable rows, no negatives
    _, negative = choose_negatives(torch.ones(4, dtype=torch.bool), 15, "pairs")
    assert int(negative.sum()) == 2


@pytest.mark.parametrize("batch, swapped", [(8, 0), (16, 0), (17, 16), (32, 16), (64, 16)])
def test_tail_swaps_the_last_16_rows_of_a_batch_of_more_than_16(batch, swapped):
    """The released code: `negative_rate` 16 rows swap halves when the batch has more than 16,
    whatever its size (gate_cl_modeling.py, MTCCMBertForMMTokenClassificationCRF.forward)."""
    cfg = MAFConfig.from_preset("released-code", bert_size="tiny")
    permutation, negative = choose_negatives(torch.ones(batch, dtype=torch.bool), tiny_model(**{
        "matching_pairs": cfg.matching_pairs, "matching_batch": cfg.matching_batch}).pairs_for(batch), cfg.negatives)
    assert int(negative.sum()) == swapped
    if swapped:
        assert negative[-16:].all()
        assert permutation[batch - 16:].tolist() == list(range(batch - 8, batch)) + list(range(batch - 16, batch - 8))


def test_ablations_switch_modules_off_on_the_same_code_path():
    base = MAFConfig.tiny()
    no_ca = MAF(base.with_ablation(no_alignment=True)).train()
    out = no_ca(**make_batch(no_ca.config))
    assert no_ca.alignment is None and out.loss_ca is None and out.loss_cm is not None
    no_cm = MAF(base.with_ablation(no_matching=True)).train()
    out = no_cm(**make_batch(no_cm.config))
    assert no_cm.matching is None and out.loss_cm is None and out.loss_ca is not None
    neither = MAF(base.with_ablation(no_alignment=True, no_matching=True)).train()
    out = neither(**make_batch(neither.config))
    assert torch.allclose(out.loss, 0.6 * out.loss_ner)
    text = MAF(base.with_ablation(text_only=True)).train()
    batch = make_batch(text.config)
    out = text(**{k: v for k, v in batch.items() if k not in ("regions", "pooled", "image_ok")})
    assert text.interaction is None and out.attention is None and torch.allclose(out.loss, 0.6 * out.loss_ner)
    assert text.emission.in_features == base.hidden_size


DESIGN_VALUES = {
    "paper": {"temperature": 0.102, "alignment_direction": 0.7, "matching_pairs": 15, "negatives": "pairs",
              "alpha": 0.2, "beta": 0.2, "loss_weighting": "paper", "scheme": "bioes"},
    "released-code": {"temperature": 0.179, "alignment_direction": 0.3, "negatives": "tail", "matching_pairs": 8,
                      "loss_weighting": "released-code", "scheme": "bio"},
}


@pytest.mark.parametrize("preset", DESIGN_VALUES)
def test_preset_holds_its_design_values(preset):
    config = MAFConfig.from_preset(preset)
    assert {name: getattr(config, name) for name in DESIGN_VALUES[preset]} == DESIGN_VALUES[preset]


@pytest.mark.parametrize("preset", DESIGN_VALUES)
def test_preset_on_bert_base_has_the_paper_sizes(preset):
    with torch.device("meta"):  # d, m and the widths come from the encoder when the model is built
        cfg = MAF(MAFConfig.from_preset(preset)).config
    assert (cfg.heads, cfg.max_length, cfg.hidden_size, cfg.image_dim, cfg.num_regions) == (12, 128, 768, 2048, 49)
    assert (cfg.interaction_ffn, cfg.alignment_hidden) == (3072, 768)


def test_a_random_init_bert_size_sets_d_m_and_the_widths():
    with torch.device("meta"):
        small = MAF(MAFConfig.from_preset("paper", bert_size="small")).config
    assert (small.hidden_size, small.heads, small.interaction_ffn, small.alignment_hidden) == (256, 4, 1024, 256)


def test_a_pretrained_bert_keeps_its_own_size():
    assert MAFConfig.from_preset("paper", bert="bert-base-cased", bert_size="small").hidden_size == 768


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown preset 'umt'"):
        MAFConfig.from_preset("umt")


def test_released_code_loss_weighting():
    model = tiny_model(loss_weighting="released-code").train()
    out = model(**make_batch(model.config), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out.loss, 0.62 * out.loss_ner + 0.38 * (out.loss_ca + out.loss_cm))


def test_config_round_trip_rebuilds_the_same_model(tmp_path):
    model = tiny_model().eval()
    model.config.save(tmp_path / "config.json")
    config = MAFConfig.load(tmp_path / "config.json")
    assert config == model.config and config.bert_config["hidden_size"] == 32
    rebuilt = MAF(config).eval()
    rebuilt.load_state_dict(model.state_dict())
    batch = make_batch(config)
    assert torch.equal(model(**batch).emissions, rebuilt(**batch).emissions)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: MAFConfig.from_dict({**MAFConfig.tiny().to_dict(), "lr": 1}), "unknown MAFConfig fields"),
        (lambda: MAF(MAFConfig.tiny(heads=5)), "heads 5: CI's attention heads must divide the text encoder's "
                                                "width 32 \\(tiny\\); leave heads unset to use the encoder's 4"),
        (lambda: MAFConfig.tiny(matching_pairs=15, matching_batch=20), "matching_batch 20"),
        (lambda: MAFConfig.tiny(ner_pairs="both"), "ner_pairs 'both'"),
    ],
    ids=["unknown-field", "hidden-size-not-divisible", "matching-batch-too-small", "unknown-ner-pairs"],
)
def test_invalid_config_is_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_sequences_longer_than_the_matching_length_are_refused():
    model = tiny_model(max_length=8).eval()
    with pytest.raises(ValueError, match="a sequence of 1[0-9] pieces is longer than the CM max_length 8"):
        model(**make_batch(model.config))
    short = make_batch(model.config, seed=1, batch=1)
    assert short["attention_mask"].sum() <= 8
    padded = make_batch(model.config, seed=1, batch=1, pad_to=12)  # only padding beyond 8: fine
    assert torch.allclose(model(**short).emissions, model(**padded).emissions, atol=1e-5)


def test_parameter_count_of_the_paper_size():
    """BERT-base size MAF, built on the meta device: shapes without memory or initialisation."""
    config = MAFConfig.from_preset(
        "paper", tags=["O"] + [f"{p}-{t}" for t in ("PER", "LOC", "ORG", "MISC") for p in "BIES"]
    )
    with torch.device("meta"):
        model = MAF(config)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    counts = count_parameters(model)
    assert abs(counts["bert"] - 108.31e6) < 0.05e6
    assert abs(counts["interaction"] - 8.66e6) < 0.05e6
    assert abs(counts["alignment"] - 3.35e6) < 0.05e6
    assert counts["matching"] == 128 * 1536 + 1
    assert abs(counts["total"] - 121.7e6) < 0.1e6


def test_negatives_keep_the_paper_share_at_other_batch_sizes():
    model = tiny_model(matching_pairs=15, matching_batch=64)
    assert [model.pairs_for(b) for b in (64, 32, 16, 8, 2)] == [15, 8, 4, 2, 1]
    model.train()
    batch = make_batch(model.config, batch=16)
    permutation, negative = choose_negatives(batch["image_ok"], model.pairs_for(16), "pairs", torch.Generator())
    assert int(negative.sum()) == 8  # 4 pairs of 16, as 15 pairs of 64 (not 14 of 16)
    assert MAFConfig.from_preset("paper").matching_batch == 64


def test_ner_on_true_pairs_leaves_the_tags_independent_of_the_swaps():
    model = tiny_model(ner_pairs="true")
    batch = make_batch(model.config, seed=6)
    model.train()  # dropout is 0 in the tiny config: train and eval differ only by the CM swaps
    trained = model(**batch, generator=torch.Generator().manual_seed(0))
    assert trained.loss_cm is not None
    model.eval()
    assert torch.allclose(trained.emissions, model(**batch).emissions, atol=1e-6)
    swapped = tiny_model().train()(**batch, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(swapped.emissions, trained.emissions)  # the default reading differs


@pytest.mark.parametrize("positions", ["real", "all"])
def test_linear_matching_cannot_separate_swapped_c(positions):
    """Why `swap = "c"` cannot train CM: for any weights, the logits of the two negatives of a
    swap sum to those of the two positives, here with tweets of 6 and 3 pieces. This holds
    only when each half of [T; C] is masked by its own tweet (or neither is): masked by T's
    tweet, C^b would lose or keep positions by a's length, which a linear head learns as
    "the lengths differ". `swap = "image"` breaks the identity."""
    torch.manual_seed(0)
    cfg = MAFConfig.tiny(matching_positions=positions, matching_outputs=2 if positions == "all" else 1)
    matching = CrossModalMatching(cfg)
    torch.nn.init.normal_(matching.classifier.weight)
    interaction = CrossModalInteraction(cfg)
    text, regions = torch.randn(2, 6, cfg.hidden_size), torch.randn(2, cfg.num_regions, cfg.image_dim)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    image, _ = interaction(text, regions)
    with torch.no_grad():
        positives = matching.logits(text, image, mask).sum()
        swapped_c = matching.logits(text, image[[1, 0]], mask, image_mask=mask[[1, 0]]).sum()
        swapped_image = matching.logits(text, interaction(text, regions[[1, 0]])[0], mask).sum()
        masked_by_t = matching.logits(text, image[[1, 0]], mask).sum()  # the old rule: C^b cut at a's length
    assert torch.allclose(positives, swapped_c, atol=1e-4)
    assert not torch.allclose(positives, swapped_image, atol=1e-3)
    if positions == "real":
        assert not torch.allclose(positives, masked_by_t, atol=1e-3)
