"""BERT-softmax (`maf train --model bert-softmax`): BERT + linear + softmax cross-entropy, no CRF, no
image; its loss against a plain loop, its tags, and every reader of its run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import BIO, make_batch, model_inputs, whole_and_resumed
from torch.nn import functional as F

from cli.maf import main as maf
from maf_core.config import MAFConfig
from maf_core.models import BertSoftmax, build_model, default_config, load_model, train_config
from maf_core.models.base import piece_targets
from maf_core.models.bert import bert_softmax_settings


def tiny(seed: int = 0, **overrides) -> BertSoftmax:
    torch.manual_seed(seed)
    return build_model(MAFConfig.tiny(**{**bert_softmax_settings(), "tags": BIO, **overrides}))


@pytest.mark.parametrize("crf_over", ["pieces", "words"])
def test_the_loss_is_the_cross_entropy_of_each_position_summed_per_tweet_and_averaged(crf_over):
    """Against a plain loop over tweets and positions: pieces with their X, [CLS], [SEP] labels
    (UMT's BertForTokenClassification's positions), or the first piece of each word."""
    model = tiny(crf_over=crf_over).eval()
    batch = make_batch(model.config, batch=4, seed=3)
    with torch.no_grad():
        out = model(**model_inputs(batch), tags=batch["tags"])
        text = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        scores = model.emission(text)
    labels = piece_targets(batch["tags"], batch["word_starts"], batch["word_mask"], batch["attention_mask"].bool(),
                           len(BIO))
    expected = 0.0
    for i in range(4):
        if crf_over == "pieces":
            positions = [(j, int(labels[i, j])) for j in range(int(batch["attention_mask"][i].sum()))]
        else:
            positions = [(int(batch["word_starts"][i, w]), int(batch["tags"][i, w]))
                         for w in range(int(batch["word_mask"][i].sum()))]
        for j, label in positions:
            expected += float(F.cross_entropy(scores[i, j][None], torch.tensor([label])))
    assert float(out.loss) == pytest.approx(expected / 4, rel=1e-5)
    assert out.match_prob is None and out.attention is None and out.loss_ca is None and out.loss_cm is None


def test_tags_are_the_argmax_of_the_schemes_tags_per_word():
    """A first piece is never trained on X, [CLS] or [SEP]: a word's tag is the best of the scheme's tags."""
    model = tiny().eval()
    batch = make_batch(model.config, batch=5, seed=4)
    with torch.no_grad():
        out = model(**model_inputs(batch), decode=True)
        model.emission.bias.data[len(BIO)] += 100.0  # X would win everywhere
        forced = model(**model_inputs(batch), decode=True)
    counts = batch["word_mask"].sum(1).tolist()
    assert out.emissions.shape == (5, batch["word_mask"].shape[1], len(model.config.crf_tags))
    assert out.tags == [row[:n] for row, n in zip(out.emissions[..., :len(BIO)].argmax(-1).tolist(), counts)]
    assert forced.tags == out.tags and any(t != 0 for row in out.tags for t in row)


def test_the_image_inputs_change_nothing_and_padding_changes_nothing():
    model = tiny().eval()
    batch = make_batch(model.config, batch=3, seed=5)
    padded = make_batch(model.config, batch=3, seed=5, pad_to=batch["input_ids"].shape[1] + 4)
    other = dict(batch, regions=torch.randn_like(batch["regions"]), image_ok=torch.zeros(3, dtype=torch.bool))
    with torch.no_grad():
        out = model(**model_inputs(batch), decode=True)
        assert torch.equal(out.emissions, model(**model_inputs(other)).emissions)
        assert torch.allclose(out.emissions, model(**model_inputs(padded)).emissions, atol=1e-5)


def test_its_config_reads_no_image_and_its_recipe_is_umts():
    config = default_config("bert-softmax")
    assert config.text_only and not config.use_alignment and not config.use_matching and not config.visual
    training = train_config("bert-softmax", "paper")
    assert (training.optimizer, training.batching, training.batch_size) == ("bertadam", "random", 32)
    with pytest.raises(ValueError, match="architecture bert-softmax reads no image"):
        BertSoftmax(MAFConfig.tiny(**{**bert_softmax_settings(), "text_only": False}))


def test_maf_only_options_are_refused_with_bert_softmax(sample_text, sample_store, tmp_path):
    result = CliRunner().invoke(maf, ["train", "--features", str(sample_store), "--text", str(sample_text),
                                      "--out", str(tmp_path / "r"), "--model", "bert-softmax", "--preset",
                                      "recommended", "--heads", "2"])
    assert result.exit_code == 1
    assert ("--model bert-softmax: --preset, --heads are not for BERT-softmax (options of MAF, UMT-BERT-CRF, "
            "MT-BERT-CRF); leave them out" in result.output)
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def run(sample_text, sample_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bert-softmax") / "run"
    result = CliRunner().invoke(maf, ["train", "--features", str(sample_store), "--text", str(sample_text),
                                      "--out", str(out), "--model", "bert-softmax", "--bert-config", "tiny",
                                      "--epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--device", "cpu",
                                      "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    assert "best epoch 1" in result.output
    return out


def test_every_reader_reads_its_run(run, tmp_path):
    """evaluate, predict (without a store: it reads no image), report, from_pretrained and the card."""
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["architecture"] == "bert-softmax" and saved["train"]["optimizer"] == "bertadam"
    assert saved["model"]["scheme"] == "bioes"  # the text's scheme
    rows = [json.loads(x) for x in (run / "predictions" / "test.jsonl").read_text().splitlines()]
    assert rows and all(r["match_prob"] is None for r in rows)
    evaluated = CliRunner().invoke(maf, ["evaluate", str(run), "--out", str(tmp_path / "eval")])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((run / "report.json").read_text())
    assert f"{report['test']['overall']['f1']:8.2f}" in evaluated.output
    tweets = tmp_path / "tweets.jsonl"
    tweets.write_text(json.dumps({"id": "t1", "text": "Rob at the beach"}) + "\n")
    predicted = CliRunner().invoke(maf, ["predict", str(run), "--input", str(tweets), "--out",
                                         str(tmp_path / "pred.jsonl")])
    assert predicted.exit_code == 0, predicted.output
    record = json.loads((tmp_path / "pred.jsonl").read_text())
    assert record["match_prob"] is None and len(record["tags"]) == 4
    done = CliRunner().invoke(maf, ["report", str(run), "--out", str(tmp_path / "figures")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "figures" / "curves.png").is_file() and (tmp_path / "figures" / "types.png").is_file()
    model = load_model(run)
    assert type(model) is BertSoftmax and not model.training and not model.has_p
    card = (run / "best" / "README.md").read_text()
    assert "| model | BERT-softmax |" in card and "bert-softmax" in card


def test_resume_of_bert_softmax_equals_an_uninterrupted_run(sample_text, sample_store, tmp_path):
    config = train_config("bert-softmax", "paper", epochs=2, batch_size=16, lr=1e-3, seed=3, device="cpu",
                          tensorboard=False)
    model = default_config("bert-softmax", bert_size="tiny")
    whole, resumed = whole_and_resumed(sample_store, sample_text, tmp_path, model, config,
                                       default_config("umt", bert_size="tiny"),
                                       r"was trained with --model bert-softmax; resume it with --model bert-softmax")
    assert resumed == whole
