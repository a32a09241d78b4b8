"""GVATT-BERT-CRF (maf_core/models/gvatt.py): the attention and the modulation gate against a plain
loop, padding, missing images, saving, the shortcut detector; its runs through the CLI and every
reader: tests/test_image_baselines.py."""
from __future__ import annotations

import pytest
import torch
from helpers import chars_to_words, image_decided_tweets, make_batch, train_and_tag_the_ambiguous_word

from maf_core.config import MAFConfig
from maf_core.models import MODEL_KEYS, build_model, default_config, fit_to_text, load_model, train_config, uses_amp
from maf_core.models.gvatt import GvattBertCRF, GvattHBiLSTMCRF, gvatt_settings

BIO = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]


def tiny(seed: int = 0, **overrides) -> GvattBertCRF:
    torch.manual_seed(seed)
    return build_model(MAFConfig.tiny(**{**gvatt_settings(), "tags": BIO, **overrides}))


def _inputs(batch: dict) -> dict:
    return {k: batch[k] for k in MODEL_KEYS}


@pytest.mark.parametrize("crf_over", ["pieces", "words"])
def test_shapes_and_padding_invariance(crf_over):
    model = tiny(crf_over=crf_over).eval()
    batch = make_batch(model.config, batch=5, seed=1)
    longer = make_batch(model.config, batch=5, seed=1, pad_to=batch["input_ids"].shape[1] + 6)
    with torch.no_grad():
        out = model(**_inputs(batch), tags=batch["tags"], decode=True)
        padded = model(**_inputs(longer), tags=longer["tags"], decode=True)
        alone = model(**{k: v[2:3] for k, v in _inputs(batch).items()}, tags=batch["tags"][2:3], decode=True)
    mask = batch["word_mask"]
    assert out.emissions.shape == (5, mask.shape[1], len(model.config.crf_tags))
    assert out.attention.shape == (5, 1, batch["input_ids"].shape[1], model.config.num_regions)
    assert torch.allclose(out.attention.sum(-1), torch.ones(5, 1, batch["input_ids"].shape[1]))
    assert torch.allclose(out.emissions[mask], padded.emissions[mask], atol=1e-5)
    assert torch.allclose(out.emissions[2:3][mask[2:3]], alone.emissions[mask[2:3]], atol=1e-5)
    assert torch.allclose(out.loss, padded.loss, atol=1e-4) and out.tags == padded.tags
    assert [len(t) for t in out.tags] == mask.sum(1).tolist()
    assert out.match_prob is None and out.loss_ca is None and out.loss_cm is None and not model.has_p


def test_every_parameter_gets_a_gradient():
    model = tiny()
    batch = make_batch(model.config, batch=4)
    model(**_inputs(batch), tags=batch["tags"]).loss.backward()
    assert [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []


def test_the_attention_and_the_gate_against_a_plain_loop():
    """e_i = w_a tanh(W_q q + b_q + W_v v_i), α = softmax(e), v_c = Σ α_i v_i with q the first piece's
    state; w_t = σ(W_w [h_t; v_c] + b_w) h_t + σ(W_v [h_t; v_c] + b_v) tanh(W_m [h_t; v_c] + b_m); E = W_c w_t;
    one tweet, one region and one piece at a time, in float64."""
    model = tiny(seed=1).double().eval()
    batch = make_batch(model.config, batch=3, seed=5)
    batch["regions"] = batch["regions"].double()
    with torch.no_grad():
        out = model(**_inputs(batch))
        text = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        att, gate = model.attention, model.gate
        for b in range(3):
            regions = [model.region_projection(v) for v in batch["regions"][b]]
            q = text[b, 0]
            scores = torch.stack([att.score.weight[0] @ torch.tanh(att.query(q) + att.key.weight @ v) for v in regions])
            alpha = torch.exp(scores) / torch.exp(scores).sum()
            assert torch.allclose(out.attention[b, 0, 0], alpha)
            context = sum(a * v for a, v in zip(alpha, regions))
            for w, start in enumerate(batch["word_starts"][b][batch["word_mask"][b]].tolist()):
                h = text[b, start]
                both = torch.cat([h, context])
                tuned = torch.sigmoid(gate.word_gate(both)) * h + \
                    torch.sigmoid(gate.visual_gate(both)) * torch.tanh(gate.merge(both))
                assert torch.allclose(out.emissions[b, w], model.emission(tuned), atol=1e-12)


def test_a_missing_image_is_the_same_as_an_all_masked_image():
    """A tweet whose image status is not ok: its stray features change nothing, get no gradient, and
    the tweet differs from the same tweet with its image (so the test can fail)."""
    model = tiny().eval()
    batch = make_batch(model.config, batch=4, seed=3)
    missing = dict(batch, image_ok=torch.tensor([True, False, True, True]))
    stray = dict(missing, regions=missing["regions"].clone())
    stray["regions"][1] = torch.randn_like(stray["regions"][1]) * 100
    stray["regions"].requires_grad_(True)
    zeroed = dict(missing, regions=missing["regions"].clone())
    zeroed["regions"][1] = 0.0
    a = model(**_inputs(zeroed), tags=batch["tags"], decode=True)
    c = model(**_inputs(stray), tags=batch["tags"], decode=True)
    assert torch.equal(a.emissions, c.emissions) and a.tags == c.tags and torch.equal(a.loss, c.loss)
    assert not c.attention[1].any()  # nothing attended to
    c.loss.backward()
    assert not stray["regions"].grad[1].any() and stray["regions"].grad[0].any()
    with_image = model(**_inputs(batch))
    assert not torch.allclose(with_image.emissions[1], a.emissions[1])
    assert torch.allclose(with_image.emissions[0], a.emissions[0], atol=1e-6)


def test_config_recipe_and_saving(tmp_path):
    config = default_config("gvatt-bert-crf")
    assert (config.scheme, config.crf_over, config.init, config.dropout_on) == ("bio", "pieces", "bert", "text")
    assert not uses_amp(None, config, "cuda") and uses_amp(True, config, "cuda")
    recipe = train_config("gvatt-bert-crf", "paper")
    assert (recipe.optimizer, recipe.batching, recipe.batch_size, recipe.lr) == ("bertadam", "random", 32, 5e-5)
    with pytest.raises(ValueError, match="architecture gvatt-bert-crf with CA, CM or text_only"):
        GvattBertCRF(MAFConfig.tiny(architecture="gvatt-bert-crf"))
    model = tiny().eval()
    model.save_pretrained(tmp_path / "m")
    again = load_model(tmp_path / "m")
    batch = make_batch(model.config, batch=3, seed=4)
    with torch.no_grad():
        assert torch.equal(model(**_inputs(batch)).emissions, again(**_inputs(batch)).emissions)
    assert type(again) is GvattBertCRF and "# GVATT-BERT-CRF" in (tmp_path / "m" / "README.md").read_text()


# ---------------------------------------------------------------- the shortcut detector


@pytest.mark.shortcuts
@pytest.mark.parametrize("informative", [False, True])
def test_the_image_decides_a_word_only_when_it_carries_the_class(informative):
    """Trained where one word's tag (B-PER or B-LOC) is decided by the image's class, GVATT tells
    the two apart on held-out tweets (which tag scores higher) at chance when the images are noise
    (nothing else tells the classes apart: no shortcut through padding, length or other rows) and
    all but perfectly when they show the class."""
    model = tiny()
    accuracy = train_and_tag_the_ambiguous_word(model, image_decided_tweets(model.config, 256, informative, 1),
                                                image_decided_tweets(model.config, 200, informative, 2))
    assert accuracy >= 0.95 if informative else 0.35 <= accuracy <= 0.65


# ---------------------------------------------------------------- a run through the CLI, and its readers


# ---------------------------------------------------------------- GVATT-HBiLSTM-CRF, on words


def tiny_words(seed: int = 0, words: list[list[str]] | None = None, **overrides) -> GvattHBiLSTMCRF:
    """HBiLSTM-CRF's settings with the image, at small sizes, its vocabularies from `words`."""
    torch.manual_seed(seed)
    default = default_config("gvatt-hbilstm-crf")
    keep = {k: getattr(default, k) for k in ("architecture", "use_alignment", "use_matching", "text_only", "scheme",
                                             "crf_over", "char_encoder")}
    config = MAFConfig.tiny(**{**keep, "word_dim": 10, "char_dim": 5, "char_hidden": 4, "lstm_hidden": 6,
                               "word_dropout": 0.0, **overrides})
    return build_model(fit_to_text(config, words or [["abc", "ABC", "a0"], ["de", "E"]]))


def test_on_words_shapes_padding_and_the_sentence_query():
    model = tiny_words().eval()
    batch = make_batch(model.config, batch=5, seed=1)
    with torch.no_grad():
        out = model(**_inputs(batch), tags=batch["tags"], decode=True)
        alone = model(**{k: v[2:3] for k, v in _inputs(batch).items()}, tags=batch["tags"][2:3], decode=True)
        mask = batch["word_mask"]
        assert out.emissions.shape == (5, mask.shape[1], len(model.config.tags))
        assert out.attention.shape == (5, 1, batch["input_ids"].shape[1], model.config.num_regions)
        n = int(mask[2].sum())
        assert torch.allclose(out.emissions[2, :n], alone.emissions[0, :n], atol=1e-5) and out.tags[2] == alone.tags[0]
        # the query: the forward half at the last word, the backward half at the first; then the gate
        hidden = model.encode(batch["word_chars"], mask.bool())
        h = model.config.lstm_hidden
        for b in range(5):
            last = int(mask[b].sum()) - 1
            query = torch.cat([hidden[b, last, :h], hidden[b, 0, h:]])
            context, alpha = model.attention(query[None], model.region_projection(batch["regions"][b : b + 1]),
                                             torch.ones(1, model.config.num_regions, dtype=torch.bool))
            assert torch.allclose(out.attention[b, 0, 0], alpha[0], atol=1e-6)
            expected = model.emission(model.gate(hidden[b : b + 1], context))[0]
            assert torch.allclose(out.emissions[b, : last + 1], expected[: last + 1], atol=1e-5)
    assert not model.has_p and out.match_prob is None


def test_on_words_every_parameter_gets_a_gradient_and_a_missing_image_is_masked():
    model = tiny_words()
    batch = make_batch(model.config, batch=4, seed=3)
    model(**_inputs(batch), tags=batch["tags"]).loss.backward()
    assert [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []
    model.eval()
    missing = dict(batch, image_ok=torch.tensor([True, False, True, True]))
    stray = dict(missing, regions=missing["regions"].clone())
    stray["regions"][1] = torch.randn_like(stray["regions"][1]) * 100
    with torch.no_grad():
        a, c, full = (model(**_inputs(x)) for x in (missing, stray, batch))
    assert torch.equal(a.emissions, c.emissions) and not c.attention[1].any()
    assert not torch.allclose(full.emissions[1], a.emissions[1])


@pytest.mark.shortcuts
@pytest.mark.parametrize("informative", [False, True])
def test_on_words_the_image_decides_a_word_only_when_it_carries_the_class(informative):
    config = tiny_words().config
    train_set = image_decided_tweets(config, 256, informative, 1)
    model = tiny_words(words=chars_to_words(train_set["word_chars"], train_set["word_mask"]))
    accuracy = train_and_tag_the_ambiguous_word(model, train_set, image_decided_tweets(config, 200, informative, 2))
    assert accuracy >= 0.95 if informative else 0.35 <= accuracy <= 0.65


