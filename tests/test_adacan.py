"""AdaCAN-BERT-CRF (maf_core/models/adacan.py): the co-attention, fusion and filtration gate against
the equations computed as written, padding, missing images, saving, the shortcut detector, two
processes against one; its runs through the CLI and every reader: tests/test_image_baselines.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import chars_to_words, image_decided_tweets, make_batch, train_and_tag_the_ambiguous_word

from maf_core.config import MAFConfig
from maf_core.models import MODEL_KEYS, build_model, default_config, fit_to_text, load_model, train_config, uses_amp
from maf_core.models.adacan import AdacanBertCRF, AdacanCNNBiLSTMCRF, adacan_settings

BIO = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]


def tiny(seed: int = 0, **overrides) -> AdacanBertCRF:
    torch.manual_seed(seed)
    return build_model(MAFConfig.tiny(**{**adacan_settings(), "tags": BIO, **overrides}))


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


def written_out(model, batch: dict, seed: int = 7) -> torch.Tensor:
    """The emissions per piece by the equations as written (module docstring), one tweet, word and
    region at a time: every score a Linear over the concatenation [query part ; key part] under the
    tanh, with the query's parts (W_h, b_h, W_ṽ, b_ṽ, the query halves of w_α and w_β, b_α, b_β),
    which the model does not build, drawn at random here."""
    d = model.config.hidden_size
    g = torch.Generator().manual_seed(seed)
    W_h, b_h, W_q, b_q = (torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, generator=g,
                          dtype=torch.float64), torch.randn(d, d, generator=g, dtype=torch.float64),
                          torch.randn(d, generator=g, dtype=torch.float64))
    w_a, w_b = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    b_a, b_b = 0.3, -0.7
    va, ta, fusion, filt = model.visual_attention, model.textual_attention, model.fusion, model.filtration
    text = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    rows = []
    for b in range(text.shape[0]):
        n = int(batch["attention_mask"][b].sum())
        H = text[b, :n]
        V = model.region_projection(batch["regions"][b])
        out = []
        for t in range(n):
            z = [torch.cat([W_h @ H[t] + b_h, va.key.weight @ v]).tanh() for v in V]
            alpha = torch.softmax(torch.stack([torch.cat([w_a, va.score.weight[0]]) @ zi + b_a for zi in z]), 0)
            v_t = sum(a * v for a, v in zip(alpha, V))
            z2 = [torch.cat([W_q @ v_t + b_q, ta.key.weight @ h]).tanh() for h in H]
            beta = torch.softmax(torch.stack([torch.cat([w_b, ta.score.weight[0]]) @ zj + b_b for zj in z2]), 0)
            h_t = sum(a * h for a, h in zip(beta, H))
            h_v, h_w = fusion.visual(v_t).tanh(), fusion.textual(h_t).tanh()
            gate = torch.sigmoid(fusion.gate(torch.cat([h_v, h_w])))
            m = gate * h_v + (1 - gate) * h_w
            s = torch.sigmoid(filt.gate(torch.cat([filt.text(H[t]), filt.multimodal(m)])))
            out.append(filt.output(torch.cat([H[t], s * filt.reserved(m).tanh()])))
        rows.append(torch.stack(out))
    return rows


def test_the_co_attention_fusion_and_filtration_against_the_equations_as_written():
    """In float64: the model's emissions are the equations' with the query's parts at any value
    (they cancel in each softmax), two draws of them, every piece of three tweets."""
    model = tiny(seed=1).double().eval()
    batch = make_batch(model.config, batch=3, seed=5)
    batch["regions"] = batch["regions"].double()
    with torch.no_grad():
        out = model(**_inputs(batch))
        for seed in (7, 8):
            for b, rows in enumerate(written_out(model, batch, seed)):
                starts = batch["word_starts"][b][batch["word_mask"][b]]
                assert torch.allclose(out.emissions[b, : len(starts)], rows[starts], atol=1e-10)


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
    config = default_config("adacan-bert-crf")
    assert (config.scheme, config.crf_over, config.init, config.dropout_on) == ("bio", "pieces", "default", "text")
    assert not uses_amp(None, config, "cuda") and uses_amp(True, config, "cuda")
    recipe = train_config("adacan-bert-crf", "paper")
    assert (recipe.optimizer, recipe.batching, recipe.batch_size, recipe.lr) == ("bertadam", "random", 32, 5e-5)
    with pytest.raises(ValueError, match="architecture adacan-bert-crf with CA, CM or text_only"):
        AdacanBertCRF(MAFConfig.tiny(architecture="adacan-bert-crf"))
    model = tiny().eval()
    model.save_pretrained(tmp_path / "m")
    again = load_model(tmp_path / "m")
    batch = make_batch(model.config, batch=3, seed=4)
    with torch.no_grad():
        assert torch.equal(model(**_inputs(batch)).emissions, again(**_inputs(batch)).emissions)
    assert type(again) is AdacanBertCRF and "# AdaCAN-BERT-CRF" in (tmp_path / "m" / "README.md").read_text()


# ---------------------------------------------------------------- the shortcut detector


@pytest.mark.shortcuts
@pytest.mark.parametrize("informative", [False, True])
def test_the_image_decides_a_word_only_when_it_carries_the_class(informative):
    """Trained where one word's tag (B-PER or B-LOC) is decided by the image's class, AdaCAN tells
    the two apart on held-out tweets (which tag scores higher) at chance when the images are noise
    (nothing else tells the classes apart: no shortcut through padding, length or other rows) and
    all but perfectly when they show the class."""
    model = tiny()
    accuracy = train_and_tag_the_ambiguous_word(model, image_decided_tweets(model.config, 256, informative, 1),
                                                image_decided_tweets(model.config, 200, informative, 2))
    assert accuracy >= 0.95 if informative else 0.35 <= accuracy <= 0.65


# ---------------------------------------------------------------- a run through the CLI, and its readers


DDP_BATCH = 9  # uneven on purpose: 5 rows on process 0, 4 on process 1


def _ddp_batch() -> dict:
    batch = make_batch(MAFConfig.tiny(**adacan_settings(), tags=BIO), batch=DDP_BATCH, seed=11)
    batch["image_ok"][[2, 6]] = False  # two tweets without an image
    return batch


def _ddp_step(model: torch.nn.Module, core: torch.nn.Module, batch: dict, rows: slice, shard) -> None:
    from maf_core.config import TrainConfig
    from maf_core.optim import optimizer_for

    optimizer = optimizer_for(core, TrainConfig(lr=1e-3))
    out = model(**{k: batch[k][rows] for k in MODEL_KEYS}, tags=batch["tags"][rows], shard=shard)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(core.parameters(), 1.0)
    optimizer.step()


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from maf_core.distributed import BatchShard, split_sizes
    from maf_core.train import build_model as build_for_training

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:  # the trainer's own DDP wrapping (no find_unused_parameters: every parameter is used)
        config = MAFConfig.tiny(**adacan_settings(), tags=BIO)
        core, model = build_for_training(config, 0, torch.device("cpu"), rank, world)
        shard = BatchShard(rank, split_sizes(DDP_BATCH, world))
        for _ in range(2):
            _ddp_step(model.train(), core, _ddp_batch(), shard.rows, shard)
        if rank == 0:
            torch.save(core.state_dict(), Path(out_dir, "weights.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one_with_the_whole_batch(tmp_path):
    import torch.multiprocessing as mp

    from maf_core.train import build_model as build_for_training

    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    two = torch.load(tmp_path / "weights.pt", weights_only=True)
    single, _ = build_for_training(MAFConfig.tiny(**adacan_settings(), tags=BIO), 0, torch.device("cpu"), 0, 1)
    start = {k: v.clone() for k, v in single.state_dict().items()}
    for _ in range(2):
        _ddp_step(single.train(), single, _ddp_batch(), slice(0, DDP_BATCH), None)
    one = single.state_dict()
    assert max(float((two[k] - one[k]).abs().max()) for k in one) < 1e-5
    assert max(float((start[k] - one[k]).abs().max()) for k in one) > 1e-4  # the steps moved the weights


# ---------------------------------------------------------------- AdaCAN-CNN-BiLSTM-CRF, on words


def tiny_words(seed: int = 0, words: list[list[str]] | None = None, **overrides) -> AdacanCNNBiLSTMCRF:
    """AdaCAN-CNN-BiLSTM-CRF's settings at small sizes, its vocabularies from `words`."""
    torch.manual_seed(seed)
    default = default_config("adacan-cnn-bilstm-crf")
    keep = {k: getattr(default, k) for k in ("architecture", "use_alignment", "use_matching", "text_only", "scheme",
                                             "crf_over", "char_encoder")}
    config = MAFConfig.tiny(**{**keep, "word_dim": 10, "char_dim": 5, "char_hidden": 4, "lstm_hidden": 6,
                               "word_dropout": 0.0, **overrides})
    return build_model(fit_to_text(config, words or [["abc", "ABC", "a0"], ["de", "E"]]))


def test_on_words_shapes_padding_and_the_head_on_the_bilstm_states():
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
        hidden = model.encode(batch["word_chars"], mask.bool())
        for b in range(5):  # the co-attention over this tweet's words alone
            n = int(mask[b].sum())
            visual, _ = model.visual_attention(model.region_projection(batch["regions"][b : b + 1]),
                                               torch.ones(1, model.config.num_regions, dtype=torch.bool))
            textual, _ = model.textual_attention(hidden[b : b + 1, :n], torch.ones(1, n, dtype=torch.bool))
            expected = model.filtration(hidden[b : b + 1, :n], model.fusion(visual, textual))[0]
            assert torch.allclose(out.emissions[b, :n], expected, atol=1e-5)
    assert model.emission is None and not model.has_p and out.match_prob is None


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


def test_on_words_the_recipe():
    config = default_config("adacan-cnn-bilstm-crf")
    assert (config.word_dim, config.lstm_hidden, config.char_encoder, config.char_dim) == (200, 100, "cnn", 30)
    recipe = train_config("adacan-cnn-bilstm-crf", "paper")
    assert (recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.warmup, recipe.batch_size, recipe.epochs) == \
        ("adamw", 1e-3, 0.0, 0.0, 10, 25)


@pytest.mark.shortcuts
@pytest.mark.parametrize("informative", [False, True])
def test_on_words_the_image_decides_a_word_only_when_it_carries_the_class(informative):
    config = tiny_words().config
    train_set = image_decided_tweets(config, 256, informative, 1)
    model = tiny_words(words=chars_to_words(train_set["word_chars"], train_set["word_mask"]))
    accuracy = train_and_tag_the_ambiguous_word(model, train_set, image_decided_tweets(config, 200, informative, 2))
    assert accuracy >= 0.95 if informative else 0.35 <= accuracy <= 0.65


