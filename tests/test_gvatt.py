"""GVATT-BERT-CRF and GVATT-HBiLSTM-CRF (maf_core/models/gvatt.py): the attention, the sentence
query and the modulation gate against a plain loop. What they share with AdaCAN's (padding,
gradients, missing images, saving, the shortcut detector, the CLI and every reader):
tests/test_image_baselines.py."""
from __future__ import annotations

import torch
from helpers import (
    make_batch,
    model_inputs,
    tiny_on_bert,
    tiny_on_words,
)


def test_the_attention_and_the_gate_against_a_plain_loop():
    """e_i = w_a tanh(W_q q + b_q + W_v v_i), α = softmax(e), v_c = Σ α_i v_i with q the first piece's
    state; w_t = σ(W_w [h_t; v_c] + b_w) h_t + σ(W_v [h_t; v_c] + b_v) tanh(W_m [h_t; v_c] + b_m); E = W_c w_t;
    one tweet, one region and one piece at a time, in float64."""
    model = tiny_on_bert("gvatt-bert-crf", seed=1).double().eval()
    batch = make_batch(model.config, batch=3, seed=5)
    batch["regions"] = batch["regions"].double()
    with torch.no_grad():
        out = model(**model_inputs(batch))
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


# ---------------------------------------------------------------- GVATT-HBiLSTM-CRF, on words


def test_on_words_shapes_padding_and_the_sentence_query():
    model = tiny_on_words("gvatt-hbilstm-crf").eval()
    batch = make_batch(model.config, batch=5, seed=1)
    with torch.no_grad():
        out = model(**model_inputs(batch), tags=batch["tags"], decode=True)
        alone = model(**{k: v[2:3] for k, v in model_inputs(batch).items()}, tags=batch["tags"][2:3], decode=True)
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


