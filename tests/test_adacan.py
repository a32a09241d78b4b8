"""AdaCAN-BERT-CRF and AdaCAN-CNN-BiLSTM-CRF (maf_core/models/adacan.py): the co-attention, fusion
and filtration gate against the equations computed as written, two processes against one, the
recipe. What they share with GVATT's (padding, gradients, missing images, saving, the shortcut
detector, the CLI and every reader): tests/test_image_baselines.py."""
from __future__ import annotations

import pytest
import torch
from helpers import (
    make_batch,
    model_inputs,
    tiny_on_bert,
    tiny_on_words,
    two_processes_and_one,
)

from maf_core.models import default_config, train_config


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
    model = tiny_on_bert("adacan-bert-crf", seed=1).double().eval()
    batch = make_batch(model.config, batch=3, seed=5)
    batch["regions"] = batch["regions"].double()
    with torch.no_grad():
        out = model(**model_inputs(batch))
        for seed in (7, 8):
            for b, rows in enumerate(written_out(model, batch, seed)):
                starts = batch["word_starts"][b][batch["word_mask"][b]]
                assert torch.allclose(out.emissions[b, : len(starts)], rows[starts], atol=1e-10)


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one_with_the_whole_batch(tmp_path):
    two, one, start = two_processes_and_one("adacan-bert-crf", tmp_path)
    assert max(float((two[k] - one[k]).abs().max()) for k in one) < 1e-5
    assert max(float((start[k] - one[k]).abs().max()) for k in one) > 1e-4  # the steps moved the weights


# ---------------------------------------------------------------- AdaCAN-CNN-BiLSTM-CRF, on words


def test_on_words_shapes_padding_and_the_head_on_the_bilstm_states():
    model = tiny_on_words("adacan-cnn-bilstm-crf").eval()
    batch = make_batch(model.config, batch=5, seed=1)
    with torch.no_grad():
        out = model(**model_inputs(batch), tags=batch["tags"], decode=True)
        alone = model(**{k: v[2:3] for k, v in model_inputs(batch).items()}, tags=batch["tags"][2:3], decode=True)
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


def test_on_words_the_recipe():
    config = default_config("adacan-cnn-bilstm-crf")
    assert (config.word_dim, config.lstm_hidden, config.char_encoder, config.char_dim) == (200, 100, "cnn", 30)
    recipe = train_config("adacan-cnn-bilstm-crf", "paper")
    assert (recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.warmup, recipe.batch_size, recipe.epochs) == \
        ("adamw", 1e-3, 0.0, 0.0, 10, 25)


