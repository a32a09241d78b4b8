"""AdaCAN-BERT-CRF and AdaCAN-CNN-BiLSTM-CRF (maf_core/models/adacan.py): the co-attention, fusion
and filtration gate against the equations computed as written, two processes against one, the
recipe. What they share with GVATT's (padding, gradients, missing images, saving, the shortcut
detector, the CLI and every reader): tests/test_image_baselines.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import (
    BIO,
    make_batch,
    model_inputs,
    tiny_on_bert,
    tiny_on_words,
)

from maf_core.config import MAFConfig
from maf_core.models import MODEL_KEYS, default_config, train_config
from maf_core.models.adacan import adacan_settings


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


