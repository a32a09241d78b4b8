"""UMT-BERT-CRF and MT-BERT-CRF (maf_core/umt.py): span labels, the conversion matrix, the gate,
padding, missing images, values pinned by hand, and runs through the CLI beside MAF.

Equality with the released code (jefferyYu/UMT) on the same weights and batch was checked once
outside the project (it is not vendored here); the values below pin what that check found."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import BIO, make_batch, model_inputs, two_processes_and_one, whole_and_resumed

from cli.maf import main as maf
from maf_core.config import MAFConfig
from maf_core.model import MAF, piece_targets
from maf_core.models import MT, build_model, default_config, load_model, train_config, uses_amp
from maf_core.models.umt import UMT, conversion_matrix, span_labels, span_states, umt_settings
from pipeline.errors import DataError

BIOES = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]


def tiny(architecture: str = "umt", seed: int = 0, **overrides) -> UMT:  # MT is a UMT
    torch.manual_seed(seed)
    return build_model(MAFConfig.tiny(**{**umt_settings(architecture), "tags": BIO, **overrides}))


# ---------------------------------------------------------------- span labels and trans_matrix


def test_span_labels_of_a_few_tweets_by_hand():
    assert span_labels(["B-PER", "I-PER", "O", "B-LOC"]) == ["B", "I", "O", "B"]
    assert span_labels(["O", "B-MISC", "I-MISC", "I-MISC"]) == ["O", "B", "I", "I"]
    assert span_labels(["S-PER", "O", "B-ORG", "I-ORG", "E-ORG"]) == ["B", "O", "B", "I", "I"]  # BIOES text
    assert span_labels(["O", "I-LOC"]) == ["O", "I"]  # an ill-formed I- stays I, as the released code's tag[0]
    with pytest.raises(ValueError, match=r"tag 'X-PER': expected O or a B-, I-, E- or S- tag"):
        span_labels(["X-PER"])


def test_span_labels_over_pieces_are_the_released_scripts():
    """A tweet of 3 words of 1, 2 and 1 pieces, B-PER I-PER O: the span CRF learns [CLS] B I X O [SEP]
    and [PAD] beyond, as run_mtmner_crf.py's auxlabel ids do (there 5 2 3 4 1 6 0)."""
    model = tiny()
    tags = torch.tensor([[BIO.index("B-PER"), BIO.index("I-PER"), 0]])
    starts, word_mask = torch.tensor([[1, 2, 4]]), torch.ones(1, 3, dtype=torch.bool)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]]).bool()
    targets = piece_targets(tags, starts, word_mask, mask, len(BIO))
    spans = [span_states(model.config)[i] for i in model.span_of_state[targets][0].tolist()]
    assert spans == ["[CLS]", "B", "I", "X", "O", "[SEP]", "[PAD]"]


def test_the_conversion_matrix_is_the_released_one():
    """run_mtmner_crf.py 620-633 (in its label order): O→O 1, B→each B- 0.25, I→each I- 0.25, and
    X, [CLS], [SEP], padding each to itself."""
    config = MAFConfig.tiny(**umt_settings("umt"), tags=BIO)
    matrix = conversion_matrix(config)
    rows, columns = span_states(config), config.crf_tags
    expected = torch.zeros(7, 13)
    for span, tag, value in [("O", "O", 1.0), ("X", "X", 1.0), ("[CLS]", "[CLS]", 1.0), ("[SEP]", "[SEP]", 1.0),
                             ("[PAD]", "[PAD]", 1.0)] + [
            (p, f"{p}-{kind}", 0.25) for p in "BI" for kind in ("PER", "LOC", "ORG", "MISC")]:
        expected[rows.index(span), columns.index(tag)] = value
    assert matrix.shape == (7, 13) and torch.equal(matrix, expected)


def test_the_conversion_matrix_of_bioes_text_spreads_b_over_b_and_s():
    config = MAFConfig.tiny(**{**umt_settings("umt"), "scheme": "bioes", "crf_over": "words"}, tags=BIOES)
    matrix = conversion_matrix(config)
    b = matrix[span_states(config).index("B")]
    assert [config.tags[i] for i in b.nonzero().flatten().tolist()] == ["B-PER", "S-PER", "B-LOC", "S-LOC"]
    assert torch.allclose(b[b > 0], torch.full((4,), 0.25)) and torch.allclose(matrix.sum(1), torch.ones(3))


# ---------------------------------------------------------------- the model


@pytest.mark.parametrize("architecture,crf_over", [("umt", "pieces"), ("mt", "pieces"), ("umt", "words")])
def test_shapes_and_padding_invariance(architecture, crf_over):
    model = tiny(architecture, crf_over=crf_over).eval()
    batch = make_batch(model.config, batch=5, seed=1)
    longer = make_batch(model.config, batch=5, seed=1, pad_to=batch["input_ids"].shape[1] + 6)
    with torch.no_grad():
        out = model(**model_inputs(batch), tags=batch["tags"], decode=True)
        padded = model(**model_inputs(longer), tags=longer["tags"], decode=True)
        alone = model(**{k: v[2:3] for k, v in model_inputs(batch).items()}, tags=batch["tags"][2:3], decode=True)
    words, states = batch["word_mask"].shape[1], len(model.config.crf_tags)
    assert out.emissions.shape == (5, words, states)
    assert out.attention.shape == (5, model.config.heads, batch["input_ids"].shape[1], model.config.num_regions)
    mask = batch["word_mask"]
    assert torch.allclose(out.emissions[mask], padded.emissions[mask], atol=1e-5)
    assert torch.allclose(out.emissions[2:3][mask[2:3]], alone.emissions[mask[2:3]], atol=1e-5)
    assert torch.allclose(out.loss, padded.loss, atol=1e-4) and out.tags == padded.tags
    assert [len(t) for t in out.tags] == mask.sum(1).tolist()
    assert out.match_prob is None and out.loss_ca is None and out.loss_cm is None
    if architecture == "umt":
        assert out.span_emissions.shape == (5, words, len(span_states(model.config)))
        assert torch.allclose(out.loss, out.loss_ner + 0.5 * out.loss_span)
    else:
        assert out.span_emissions is None and out.loss_span is None and torch.equal(out.loss, out.loss_ner)
        assert not any(name.startswith("span_") for name, _ in model.named_parameters())


def test_every_parameter_gets_a_gradient():
    model = tiny()
    batch = make_batch(model.config, batch=4)
    model(**model_inputs(batch), tags=batch["tags"]).loss.backward()
    idle = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert idle == []


def test_the_gate_on_a_hand_built_case():
    """H = [P; g ⊙ A] with g = σ(W_g [P; A] + b): with W_g = 0 and b = 0 the image half is A / 2;
    with W_g = 0 and b = -30 it is (within σ(-30)) shut."""
    model = tiny().eval()
    batch = make_batch(model.config, batch=3, seed=2)
    seen = {}
    model.text_to_image.register_forward_hook(lambda m, i, o: seen.__setitem__("A", o[0]))
    model.text_to_text.register_forward_hook(lambda m, i, o: seen.__setitem__("P", o[0]))
    model.emission.register_forward_hook(lambda m, i, o: seen.__setitem__("H", i[0]))
    d = model.config.hidden_size
    with torch.no_grad():
        model(**model_inputs(batch))
        gate = torch.sigmoid(model.gate(torch.cat([seen["P"], seen["A"]], -1)))
        assert torch.allclose(seen["H"], torch.cat([seen["P"], gate * seen["A"]], -1))
        model.gate.weight.zero_()
        model.gate.bias.zero_()
        model(**model_inputs(batch))
        assert torch.allclose(seen["H"][..., d:], 0.5 * seen["A"]) and torch.equal(seen["H"][..., :d], seen["P"])
        model.gate.bias.fill_(-30.0)
        model(**model_inputs(batch))
        assert seen["H"][..., d:].abs().max() < 1e-10


def test_a_missing_image_is_the_same_as_an_all_masked_image():
    """A tweet whose image status is not ok: its stray features change nothing (they are zeroed and
    every region is masked), it gets no gradient into them, and it differs from the same tweet
    with its image (so the test can fail)."""
    model = tiny(dropout=0.0).eval()
    batch = make_batch(model.config, batch=4, seed=3)
    missing = dict(batch, image_ok=torch.tensor([True, False, True, True]))
    masked = dict(missing, regions=missing["regions"].clone())
    masked["regions"][1] = 0.0
    stray = dict(missing, regions=missing["regions"].clone())
    stray["regions"][1] = torch.randn_like(stray["regions"][1]) * 100
    stray["regions"].requires_grad_(True)
    a = model(**model_inputs(missing), tags=batch["tags"], decode=True)
    b = model(**model_inputs(masked), tags=batch["tags"], decode=True)
    c = model(**model_inputs(stray), tags=batch["tags"], decode=True)
    assert torch.equal(a.emissions, b.emissions) and torch.equal(a.emissions, c.emissions)
    assert a.tags == b.tags == c.tags and torch.equal(a.loss, c.loss)
    c.loss.backward()
    assert not stray["regions"].grad[1].any() and stray["regions"].grad[0].any()
    with_image = model(**model_inputs(batch))
    assert not torch.allclose(with_image.emissions[1], a.emissions[1])
    assert torch.allclose(with_image.emissions[0], a.emissions[0], atol=1e-6)  # other rows keep theirs


def test_values_pinned_on_a_fixed_seed():
    """The loss parts of a tiny UMT on a fixed batch (float32, CPU), and its first emissions: a change
    of the computation shows here. The same computation matched the released code to 4e-15 in
    float64 on shared weights (losses, emissions, gradients and Viterbi paths)."""
    model = tiny(seed=0)
    batch = make_batch(model.config, batch=4, seed=0)
    out = model(**model_inputs(batch), tags=batch["tags"])
    assert out.loss_ner.item() == pytest.approx(PINNED["ner"], rel=1e-4)
    assert out.loss_span.item() == pytest.approx(PINNED["span"], rel=1e-4)
    assert out.loss.item() == pytest.approx(PINNED["ner"] + 0.5 * PINNED["span"], rel=1e-4)
    assert out.emissions[0, 0, :3].tolist() == pytest.approx(PINNED["emissions"], abs=2e-6)


PINNED = {"ner": 30.19032, "span": 22.19610, "emissions": [-0.025628, 0.040025, -0.061601]}


def test_umt_and_mt_run_in_fp32_on_cuda_unless_amp_is_asked_for():
    """As their released code (fp32 unless --fp16); MAF's paper preset takes bf16 on CUDA."""
    for name in ("umt", "mt"):
        config = default_config(name)
        assert not uses_amp(None, config, "cuda") and uses_amp(True, config, "cuda")
    assert uses_amp(None, default_config("maf"), "cuda")


def test_bf16_autocast_keeps_the_crf_in_fp32():
    model = tiny()
    batch = make_batch(model.config, batch=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**model_inputs(batch), tags=batch["tags"], decode=True)
    assert out.emissions.dtype == torch.float32 and out.span_emissions.dtype == torch.float32
    assert torch.isfinite(out.loss)


# ---------------------------------------------------------------- configs and checkpoints


def test_maf_and_umt_refuse_each_others_configs(tmp_path):
    with pytest.raises(ValueError, match="MAF builds architecture maf, not 'umt'"):
        MAF(MAFConfig.tiny(**umt_settings("umt"), tags=BIO))
    with pytest.raises(ValueError, match="UMT builds architecture umt, not 'maf'"):
        UMT(MAFConfig.tiny())
    with pytest.raises(ValueError, match="MT builds architecture mt, not 'umt'"):
        MT(MAFConfig.tiny(**umt_settings("umt"), tags=BIO))
    with pytest.raises(ValueError, match="architecture umt with CA, CM or text_only"):
        UMT(MAFConfig.tiny(architecture="umt"))
    tiny("mt").save_pretrained(tmp_path / "mt")
    with pytest.raises(DataError, match=r"holds a mt model, not a MAF; load it with maf_core.models.load_model"):
        MAF.from_pretrained(tmp_path / "mt")
    assert type(load_model(tmp_path / "mt")) is MT and type(UMT.from_pretrained(tmp_path / "mt")) is MT
    tiny("umt").save_pretrained(tmp_path / "umt")
    with pytest.raises(DataError, match=r"holds a umt model, not a MT; load it with maf_core.models.load_model"):
        MT.from_pretrained(tmp_path / "umt")


def test_a_checkpoint_of_the_other_model_or_an_unknown_one_is_one_line(tmp_path):
    tiny("umt").save_pretrained(tmp_path / "umt")
    config = json.loads((tmp_path / "umt" / "config.json").read_text())
    (tmp_path / "umt" / "config.json").write_text(json.dumps({**config, "architecture": "mt"}))
    with pytest.raises(DataError, match=r"not weights of the model its config.json describes: 21 unexpected "
                                        r"\(first: span_"):
        load_model(tmp_path / "umt")  # MT's config beside UMT's weights: the span detection is left over
    (tmp_path / "umt" / "config.json").write_text(json.dumps({**config, "architecture": "lstm"}))
    with pytest.raises(DataError, match=r"config.json: architecture 'lstm' is not a model this version knows"):
        load_model(tmp_path / "umt")


def test_saved_and_loaded_it_gives_the_same_tags(tmp_path):
    model = tiny().eval()
    batch = make_batch(model.config, batch=3, seed=4)
    model.save_pretrained(tmp_path / "m")
    again = load_model(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(model(**model_inputs(batch)).emissions, again(**model_inputs(batch)).emissions)
    assert "UMT-BERT-CRF / MT-BERT-CRF" in (tmp_path / "m" / "README.md").read_text()


def test_load_model_finds_a_umt_by_hub_name_in_the_hugging_face_cache(tmp_path):
    """load_model reads the architecture from the Hub repository's config.json (offline here: a cache
    laid out as a download leaves it), then loads it as UMT.from_pretrained would."""
    model = tiny("mt").eval()
    snapshot = tmp_path / "cache" / "models--someone--mt-tiny" / "snapshots" / "0123abcd"
    model.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    again = load_model("someone/mt-tiny", cache_dir=tmp_path / "cache", local_files_only=True)
    batch = make_batch(model.config, batch=2)
    assert isinstance(again, UMT) and again.config.architecture == "mt" and not again.training
    with torch.no_grad():
        assert torch.equal(model(**model_inputs(batch)).emissions, again(**model_inputs(batch)).emissions)


# ---------------------------------------------------------------- runs through the CLI


@pytest.fixture(scope="module")
def runs(sample_text, sample_store, tmp_path_factory) -> dict[str, Path]:
    """A tiny UMT, MT and MAF, one epoch each, trained through `maf train` on the same text and store."""
    root = tmp_path_factory.mktemp("umt-runs")
    out = {}
    for model in ("umt", "mt", "maf"):
        out[model] = root / model
        result = CliRunner().invoke(maf, ["train", "--features", str(sample_store), "--text", str(sample_text),
                                          "--out", str(out[model]), "--model", model, "--bert-config", "tiny",
                                          "--epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--device", "cpu",
                                          "--no-tensorboard"])
        assert result.exit_code == 0, result.output
        out[f"{model}-output"] = result.output
    return out


def _predictions(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "predictions" / "test.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["umt", "mt"])
def test_a_umt_or_mt_run_records_its_model_the_released_optimizer_and_the_text_s_scheme(runs, model):
    saved = json.loads((runs[model] / "config.json").read_text())
    assert saved["model"]["architecture"] == model and saved["train"]["optimizer"] == "bertadam"
    assert saved["model"]["scheme"] == "bioes" and saved["model"]["crf_over"] == "pieces"  # the text's scheme
    assert "best epoch 1" in runs[f"{model}-output"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["umt", "mt"])
def test_umt_and_mt_predictions_have_no_match_probability(runs, model):
    rows = _predictions(runs[model])
    assert rows and all(r["match_prob"] is None for r in rows)  # no CM: p is absent


@pytest.mark.slow
@pytest.mark.parametrize("model", ["umt", "mt"])
def test_evaluate_rebuilds_umt_and_mt_and_gives_the_reported_f1(runs, model, tmp_path):
    evaluated = CliRunner().invoke(maf, ["evaluate", str(runs[model]), "--out", str(tmp_path / "eval")])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads((runs[model] / "report.json").read_text())
    assert f"{report['test']['overall']['f1']:8.2f}" in evaluated.output


@pytest.mark.slow
@pytest.mark.parametrize("model", ["umt", "mt"])
def test_predict_rebuilds_umt_and_mt_and_tags_a_new_tweet_without_p(runs, model, tmp_path):
    run = runs[model]
    tweets = tmp_path / "tweets.jsonl"
    tweets.write_text(json.dumps({"id": "t1", "text": "Rob at the beach", "image": _predictions(run)[0]["id"]}) + "\n")
    predicted = CliRunner().invoke(maf, ["predict", str(run), "--input", str(tweets), "--features",
                                         json.loads((run / "config.json").read_text())["features"],
                                         "--out", str(tmp_path / "pred.jsonl")])
    assert predicted.exit_code == 0, predicted.output
    record = json.loads((tmp_path / "pred.jsonl").read_text())
    assert record["match_prob"] is None and len(record["tags"]) == 4


@pytest.mark.slow
@pytest.mark.parametrize("model", ["umt", "mt"])
def test_the_model_card_of_a_umt_or_mt_run_names_its_model(runs, model):
    card = (runs[model] / "best" / "README.md").read_text()
    assert f"| model | {'UMT' if model == 'umt' else 'MT'}-BERT-CRF |" in card


@pytest.mark.slow
def test_report_beside_maf_shows_no_p_for_umt_and_draws_its_case_study(runs, tmp_path):
    figures = tmp_path / "figures"
    first = _predictions(runs["umt"])[0]["id"]
    done = CliRunner().invoke(maf, ["report", str(runs["maf"]), str(runs["umt"]), str(runs["mt"]), "--out",
                                    str(figures), "--case-run", str(runs["umt"]), "--ids", first])
    assert done.exit_code == 0, done.output
    table = (figures / "comparison.txt").read_text().splitlines()
    umt_line = next(line for line in table if line.startswith("umt"))
    assert umt_line.split()[-3:] == ["-", "-", "-"]  # p matched, p unrelated, AUC: UMT has no p
    assert (figures / "cases.png").is_file() and (figures / "curves.png").is_file()


@pytest.mark.slow
def test_seeds_train_one_mt_run_each_and_summarise_them(sample_text, sample_store, tmp_path):
    result = CliRunner().invoke(maf, ["train", "--features", str(sample_store), "--text", str(sample_text), "--out",
                                      str(tmp_path / "mt"), "--model", "mt", "--bert-config", "tiny", "--epochs", "1",
                                      "--batch-size", "16", "--seeds", "1,2", "--device", "cpu", "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    for seed in (1, 2):
        assert json.loads((tmp_path / "mt" / f"seed-{seed}" / "config.json").read_text())["model"]["architecture"] \
            == "mt"
    assert json.loads((tmp_path / "mt" / "summary.json").read_text())["seeds"] == [1, 2]


def test_maf_only_options_are_refused_with_umt(sample_text, sample_store, tmp_path):
    result = CliRunner().invoke(maf, ["train", "--features", str(sample_store), "--text", str(sample_text),
                                      "--out", str(tmp_path / "r"), "--model", "umt", "--swap", "image",
                                      "--no-alignment"])
    assert result.exit_code == 1
    assert ("--model umt: --swap, --no-alignment are not for UMT-BERT-CRF (options of MAF); leave them out"
            in result.output)
    assert not (tmp_path / "r").exists()


def test_resume_of_umt_equals_an_uninterrupted_run(sample_text, sample_store, tmp_path):
    config = train_config("umt", "paper", epochs=2, batch_size=16, lr=1e-3, seed=3, device="cpu",
                          tensorboard=False)
    model = default_config("umt", bert_size="tiny")
    whole, resumed = whole_and_resumed(sample_store, sample_text, tmp_path, model, config,
                                       MAFConfig.tiny(scheme="bioes"),
                                       r"was trained with --model umt; resume it with --model umt, not maf")
    assert resumed == whole


# ---------------------------------------------------------------- torchrun / DDP


@pytest.mark.slow
def test_two_processes_take_the_steps_of_one_with_the_whole_batch(tmp_path):
    """Under the trainer's DDP wrapping, no find_unused_parameters: UMT builds no idle pooler."""
    two, one, start = two_processes_and_one("umt", tmp_path)
    assert max(float((two[k] - one[k]).abs().max()) for k in one) < 1e-5
    assert max(float((start[k] - one[k]).abs().max()) for k in one) > 1e-4  # the steps moved the weights


def test_parameter_count_of_the_paper_size():
    """BERT-base size UMT on the meta device. With BERT's pooler (0.59M: the released code builds it
    and never reads it) and ResNet-152 with its classifier layer (60.19M), it is the 208.29M the
    paper's Table 3 gives UMT-BERT-CRF."""
    config = default_config("umt", tags=["O"] + [f"{p}-{t}" for t in ("PER", "LOC", "ORG", "MISC")
                                                             for p in "BI"])
    with torch.device("meta"):
        umt, mt = UMT(config), MT(default_config("mt", tags=config.tags))
    total = sum(p.numel() for p in umt.parameters())
    assert total == 147_512_342
    assert total - sum(p.numel() for p in mt.parameters()) == 7_093_318  # the span detection
    pooler, resnet152 = 768 * 768 + 768, 60_192_808
    assert round((total + pooler + resnet152) / 1e6, 2) == 208.30  # the paper: 208.29 (truncated)


@pytest.mark.slow
def test_maf_serve_shows_a_umt_run_beside_maf(runs):
    """`maf serve` reads any run: a UMT run browses (p absent), draws its text-to-image attention
    and answers /api/predict; compared with MAF it lists the same tweets."""
    from fastapi.testclient import TestClient

    from maf_core.serve import build

    with TestClient(build(runs["umt"], compare=runs["maf"], device="cpu"), base_url="http://127.0.0.1:7860") as client:
        browse = client.get("/api/browse")
        assert browse.status_code == 200, browse.text
        tweets = browse.json()["tweets"]
        predicted = [json.loads(line) for line in (runs["umt"] / "predictions" / "test.jsonl").read_text().splitlines()]
        assert len(tweets) == len(predicted)
        answer = client.post("/api/predict", json={"items": [{"text": "Rob at the beach"}]})
        assert answer.status_code == 200, answer.text
        item = answer.json()["items"][0]
        assert item["words"] == ["Rob", "at", "the", "beach"] and item.get("p") is None
