"""The released-code preset is the released code (xubodhu/MAF), one test per difference from the paper."""
from __future__ import annotations

import math

import pytest
import torch
from helpers import make_batch
from torch import nn

from maf_core.alignment import contrastive_loss
from maf_core.config import PIECE_TAGS, MAFConfig
from maf_core.data import Split
from maf_core.model import MAF
from maf_core.models import train_config, uses_amp
from maf_core.optim import BertAdam, optimizer_for, released_schedule, released_total_steps, schedule_for
from maf_core.train import train_step

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def released(**overrides) -> MAFConfig:
    """The released-code preset at the tiny sizes."""
    base = MAFConfig.from_preset("released-code", bert_size="tiny")
    sizes = MAFConfig.tiny(tags=TAGS)
    values = {**base.to_dict(), **{k: getattr(sizes, k) for k in (
        "vocab_size", "hidden_size", "image_dim", "num_regions", "alignment_hidden", "heads", "interaction_ffn",
        "max_length", "tags")}, "bert_config": None, **overrides}
    return MAFConfig(**values)


def test_the_schedule_is_warmup_linear_over_the_released_step_count():
    # Twitter-2015: 4,000 tweets, batch 64, 24 epochs -> int(62.5) * 24 = 1,488 (63 batches a
    # epoch are trained: 1,512 steps); Twitter-2017: int(3373 / 64) * 23 = 1,196
    assert released_total_steps(4000, 64, 24) == 1488 and released_total_steps(3373, 64, 23) == 1196
    factor = released_schedule(1488, 0.1)
    assert factor(0) == 0.0                                     # BertAdam's first step has rate 0
    assert factor(74) == pytest.approx(74 / 1488 / 0.1)         # 0.4973
    assert factor(148) == pytest.approx(148 / 148.8)            # 0.9946, the last warm-up step
    assert factor(149) == pytest.approx(1 - 149 / 1488)         # 0.8999: from 1.0 down to 0.9
    assert factor(1487) == pytest.approx(1 / 1488)
    assert factor(1488) == 0.0 and factor(1511) == 0.0          # 1 - x < 0 in the released code; 0 here


def test_bertadam_has_no_bias_correction_and_clips_each_tensor():
    a = nn.Parameter(torch.tensor([1.0, -2.0]))
    b = nn.Parameter(torch.tensor([0.5]))
    optimizer = BertAdam([{"params": [a], "weight_decay": 0.01}, {"params": [b], "weight_decay": 0.0}], lr=0.1)
    grads = [(torch.tensor([3.0, 4.0]), torch.tensor([0.2])), (torch.tensor([0.0, 0.3]), torch.tensor([-0.1]))]
    expected_a, expected_b = a.detach().clone(), b.detach().clone()
    m_a = v_a = torch.zeros(2)
    m_b = v_b = torch.zeros(1)
    for grad_a, grad_b in grads:
        a.grad, b.grad = grad_a.clone(), grad_b.clone()
        optimizer.step()
        grad_a = grad_a / max(1.0, float(grad_a.norm()))  # |(3, 4)| = 5 -> (0.6, 0.8); b's own norm is < 1
        m_a, v_a = 0.9 * m_a + 0.1 * grad_a, 0.999 * v_a + 0.001 * grad_a ** 2
        m_b, v_b = 0.9 * m_b + 0.1 * grad_b, 0.999 * v_b + 0.001 * grad_b ** 2
        expected_a = expected_a - 0.1 * (m_a / (v_a.sqrt() + 1e-6) + 0.01 * expected_a)
        expected_b = expected_b - 0.1 * (m_b / (v_b.sqrt() + 1e-6))
    assert torch.allclose(a.detach(), expected_a, atol=1e-6) and torch.allclose(b.detach(), expected_b, atol=1e-6)


RELEASED_TRAINING = train_config("maf", "released-code", epochs=24, batch_size=64, lr=5e-5)


def test_released_training_is_bertadam_on_random_batches_with_clipping():
    config = RELEASED_TRAINING
    assert (config.optimizer, config.batching, config.clip) == ("bertadam", "random", 1.0)


def test_paper_training_is_adamw():
    assert train_config("maf", "paper", lr=5e-5).optimizer == "adamw"


def test_an_optimizer_flag_wins_over_the_preset():
    assert train_config("maf", "released-code", optimizer="adamw").optimizer == "adamw"


@pytest.mark.parametrize("amp, preset, device, expected", [
    (None, "released-code", "cuda", False),  # the released code trains in fp32 (its --fp16 is off by default)
    (None, "paper", "cuda", True), (None, "recommended", "cuda", True),
    (True, "released-code", "cuda", True), (False, "paper", "cuda", False),  # --amp / --no-amp win
    (None, "released-code", "cpu", False), (None, "paper", "cpu", False),
])
def test_bf16_autocast_is_on_with_cuda_but_for_the_released_preset(amp, preset, device, expected):
    assert uses_amp(amp, MAFConfig.from_preset(preset, bert_size="tiny"), device) is expected


def test_tagging_a_split_takes_its_precision_from_the_model(monkeypatch):
    """predict_split asks uses_amp with the model's config (None: no --amp flag), and autocasts as it says."""
    import maf_core.inference as inference

    asked, used = [], []
    monkeypatch.setattr(inference, "uses_amp", lambda amp, config, device_type: asked.append((amp, config)) or True)
    monkeypatch.setattr(inference, "autocast", lambda device, amp: used.append(amp) or torch.autocast("cpu",
                                                                                                       enabled=False))
    model = MAF(MAFConfig.tiny(text_only=True))  # no store needed
    split = Split("test", ["1", "2", "3"], [["a", "b"]] * 3, [["O", "O"]] * 3, [[2, 7, 8, 3]] * 3, [[1, 2]] * 3,
                  [[0, 0]] * 3)
    inference.predict_split(model, split, None, model.config.tags, model.config.scheme, 8, torch.device("cpu"))
    assert asked == [(None, model.config)] and used and set(used) == {True}


@pytest.fixture()
def released_training() -> tuple[MAF, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """A fresh tiny released-code model with its optimizer and schedule (Twitter-2015 sizes), per test."""
    torch.manual_seed(0)
    model = MAF(released())
    optimizer = optimizer_for(model, RELEASED_TRAINING)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_for(RELEASED_TRAINING, 4000, 63))
    return model, optimizer, scheduler


def test_released_optimizer_is_bertadam(released_training):
    assert isinstance(released_training[1], BertAdam)


def test_no_weight_decay_on_biases_and_layernorm_weights(released_training):
    model, optimizer, _ = released_training
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():  # as the released code's no_decay list
        assert (id(p) in decayed) == (not name.endswith("bias") and "norm" not in name.lower()), name


def test_the_first_step_leaves_the_weights_unchanged(released_training):
    model, optimizer, _ = released_training
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_step(model.train(), optimizer, make_batch(model.config), torch.device("cpu"),
               generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # BertAdam's rate 0 at step 0


def test_the_second_step_has_the_first_warm_up_rate(released_training):
    model, optimizer, scheduler = released_training
    train_step(model.train(), optimizer, make_batch(model.config), torch.device("cpu"),
               generator=torch.Generator().manual_seed(0))
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-5 / 148.8)


def test_alignment_weights_the_text_to_image_direction_by_0_7():
    """gate_cl_modeling.py total_loss: lamb * text_toimage_loss + (1 - lamb) * image_totext_loss,
    lamb = temp_lamb = 0.7, text_toimage_loss anchoring each text against all images."""
    torch.manual_seed(0)
    n, tau = 5, 0.179
    text, image = torch.randn(n, 6), torch.randn(n, 6)

    def anchored(anchor, others):
        total = 0.0
        for i in range(n):
            sims = [float(anchor[i] @ others[j] / (anchor[i].norm() * others[j].norm())) / tau for j in range(n)]
            total += -math.log(math.exp(sims[i]) / sum(math.exp(s) for s in sims))
        return total

    expected = (0.7 * anchored(text, image) + 0.3 * anchored(image, text)) / n
    config = MAFConfig.from_preset("released-code")
    assert float(contrastive_loss(image, text, config.temperature, config.alignment_direction)) == pytest.approx(
        expected, abs=1e-5
    )


def test_interaction_is_a_bert_cross_attention_layer():
    model = MAF(released())
    ffn = model.interaction.ffn
    assert isinstance(ffn[1], nn.GELU) and ffn[1].approximate == "none"  # BERT's erf gelu
    assert model.interaction.attention_norm.eps == 1e-12 and model.interaction.ffn_norm.eps == 1e-12
    paper = MAF(MAFConfig.tiny(tags=TAGS))
    assert isinstance(paper.interaction.ffn[1], nn.ReLU) and paper.interaction.attention_norm.eps == 1e-5


@torch.no_grad()
def test_new_layers_start_as_bert_initialises_them():
    torch.manual_seed(0)
    model = MAF(released(hidden_size=32, interaction_ffn=400))
    weight = model.interaction.ffn[0].weight.detach()
    assert abs(float(weight.std()) - 0.02) < 0.002 and float(model.interaction.ffn[0].bias.detach().abs().max()) == 0.0
    assert abs(float(model.matching.classifier.weight.detach().std()) - 0.02) < 0.002
    assert float(model.emission.bias.abs().max()) == 0.0
    paper = MAF(MAFConfig.tiny(tags=TAGS, interaction_ffn=400))
    assert float(paper.interaction.ffn[0].weight.std()) > 0.05  # PyTorch's default: U(+-1/sqrt(32))


def test_dropout_acts_on_t_before_ci_cm_and_cf():
    seen = {}
    for where in ("text", "emissions"):
        torch.manual_seed(0)
        model = MAF(released(dropout=0.5, dropout_on=where)).train()
        model.interaction.register_forward_hook(lambda module, args, out, where=where: seen.__setitem__(where, args[0]))
        batch = make_batch(model.config)
        model(**batch, generator=torch.Generator().manual_seed(0))
        seen[where + "-zeros"] = float((seen[where] == 0).float().mean())
    assert seen["text-zeros"] > 0.3            # about half of T is dropped before CI
    assert seen["emissions-zeros"] == 0.0      # the paper preset drops [T; R] before the tag layer instead


def test_fusion_and_matching_layers_as_released():
    model = MAF(released())
    assert model.fusion.image_gate.bias is not None                    # Gate_image is a Linear with its bias
    assert model.matching.classifier.out_features == 2                 # crs_classifier: Linear(2 d 128, 2)
    assert model.matching.classifier.in_features == 2 * model.config.hidden_size * model.config.max_length
    text = torch.randn(3, 16, model.config.hidden_size)
    image = torch.randn(3, 16, model.config.hidden_size)
    p, _ = model.matching(text, image, torch.ones(3, 16, dtype=torch.bool))
    out = model.matching.classifier(torch.cat([text, image], -1).flatten(1))
    assert torch.allclose(p, torch.softmax(out, -1)[:, 1], atol=1e-6)  # P = softmax(crs_result)[:, 1]


def test_matching_sees_all_max_length_positions_unmasked():
    """The released CM flattens all 128 positions, BERT's states at the padding included: each
    batch is padded to max_length, so p is the same however the caller padded it, and it
    differs from p over the real pieces only."""
    torch.manual_seed(0)
    model = MAF(released()).eval()
    batch = make_batch(model.config, seed=3)
    padded = make_batch(model.config, seed=3, pad_to=model.config.max_length)
    assert torch.allclose(model(**batch).match_prob, model(**padded).match_prob, atol=1e-5)
    real = MAF(released(matching_positions="real")).eval()
    real.load_state_dict(model.state_dict())
    assert not torch.allclose(model(**batch).match_prob, real(**batch).match_prob, atol=1e-4)


@torch.no_grad()
def test_crf_runs_over_every_piece_with_x_cls_and_sep():
    model = MAF(released())
    assert model.config.crf_tags == TAGS + list(PIECE_TAGS) and model.crf.num_tags == len(TAGS) + 4
    x, cls, sep, pad = (len(TAGS) + i for i in range(4))
    # one tweet: [CLS] w0 w1a w1b w2 [SEP] <pad>; words tagged B-PER, I-PER, O
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]], dtype=torch.bool)
    starts, word_mask = torch.tensor([[1, 2, 4]]), torch.ones(1, 3, dtype=torch.bool)
    targets = model._crf_targets(torch.tensor([[1, 2, 0]]), starts, word_mask, mask)
    assert targets.tolist() == [[cls, 1, 2, x, 0, sep, pad]]
    # the gold path goes I-PER -> X -> O through the transitions, as the released CRF scores it
    emissions = torch.zeros(1, 7, model.crf.num_tags)
    gold = float(model.crf._score(emissions, targets, mask))
    crf = model.crf
    path = targets[0, :6].tolist()
    expected = crf.start_transitions[cls] + sum(crf.transitions[a, b] for a, b in zip(path, path[1:])) + \
        crf.end_transitions[sep]
    assert gold == pytest.approx(float(expected), abs=1e-6)
    # decoding reads each word's first piece; a piece state there counts as O
    emissions = torch.full((1, 7, model.crf.num_tags), -20.0)
    for position, tag in enumerate([cls, 3, x, 4, x, sep, pad]):
        emissions[0, position, tag] = 20.0
    assert model._decode(emissions, mask, starts, word_mask) == [[3, 0, 0]]


def test_released_model_trains_and_decodes_words():
    torch.manual_seed(0)
    model = MAF(released()).train()
    batch = make_batch(model.config)
    out = model(**batch, generator=torch.Generator().manual_seed(0), decode=True)
    assert out.loss is not None and out.loss_cm is not None
    assert torch.allclose(out.loss, 0.62 * out.loss_ner + 0.38 * (out.loss_ca + out.loss_cm))
    assert [len(t) for t in out.tags] == batch["word_mask"].sum(1).tolist()
    assert all(0 <= t < len(TAGS) for row in out.tags for t in row)
    assert out.emissions.shape[:2] == batch["word_mask"].shape
