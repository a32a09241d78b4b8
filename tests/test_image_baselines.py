"""The image baselines of Table 2 (GVATT and AdaCAN, on BERT and on words), one test per behaviour
for all four: through the CLI and the trainer (every reader reads a run, MAF's options are refused,
`--bert` is refused for the word-level ones, resume equals an uninterrupted run, `maf serve` reads
a BERT one, `maf predict --images`) and the models themselves (shapes and padding, gradients, a
missing image, config and saving, the shortcut detector). Each one's own equations against a plain
loop: tests/test_gvatt.py, tests/test_adacan.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import (
    SERVE_BASE,
    chars_to_words,
    image_decided_tweets,
    make_batch,
    model_inputs,
    tiny_on_bert,
    tiny_on_words,
    train_and_tag_the_ambiguous_word,
    whole_and_resumed,
)

from cli.maf import main as maf
from maf_core.config import MAFConfig
from maf_core.models import default_config, load_model, model_class, train_config, uses_amp

ON_BERT = ["gvatt-bert-crf", "adacan-bert-crf"]
ON_WORDS = ["gvatt-hbilstm-crf", "adacan-cnn-bilstm-crf"]


def train_cli(sample_store: Path, sample_text: Path, out: Path, name: str, *flags: str):
    return CliRunner().invoke(maf, ["train", "--features", str(sample_store), "--text", str(sample_text), "--out",
                                    str(out), "--model", name, "--epochs", "1", "--batch-size", "16", "--device", "cpu",
                                    "--no-tensorboard", *flags])


@pytest.fixture(scope="module", params=ON_BERT)
def bert_run(request, sample_text, sample_store, tmp_path_factory) -> tuple[str, Path]:
    name = request.param
    out = tmp_path_factory.mktemp(name) / "run"
    result = train_cli(sample_store, sample_text, out, name, "--bert-config", "tiny")
    assert result.exit_code == 0, result.output
    return name, out


def test_every_reader_reads_a_run_on_bert(bert_run, tmp_path):
    """evaluate, predict with the run's store, report with a case figure, and the card; p is null."""
    name, run = bert_run
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["architecture"] == name and saved["train"]["optimizer"] == "bertadam"
    rows = [json.loads(x) for x in (run / "predictions" / "test.jsonl").read_text().splitlines()]
    assert rows and all(r["match_prob"] is None for r in rows)  # no CM: p is null
    evaluated = CliRunner().invoke(maf, ["evaluate", str(run), "--out", str(tmp_path / "eval")])
    assert evaluated.exit_code == 0, evaluated.output
    tweets = tmp_path / "tweets.jsonl"
    tweets.write_text(json.dumps({"id": "t1", "text": "Rob at the beach", "image": rows[0]["id"]}) + "\n")
    predicted = CliRunner().invoke(maf, ["predict", str(run), "--input", str(tweets), "--features",
                                         saved["features"], "--out", str(tmp_path / "pred.jsonl")])
    assert predicted.exit_code == 0, predicted.output
    record = json.loads((tmp_path / "pred.jsonl").read_text())
    assert record["match_prob"] is None and len(record["tags"]) == 4
    assert f"| model | {model_class(name).title} |" in (run / "best" / "README.md").read_text()
    done = CliRunner().invoke(maf, ["report", str(run), "--out", str(tmp_path / "figures"), "--case-run", str(run),
                                    "--ids", rows[0]["id"]])
    assert done.exit_code == 0, done.output
    line = (tmp_path / "figures" / "comparison.txt").read_text().splitlines()[1]  # under the header
    assert line.split()[-3:] == ["-", "-", "-"]  # p matched, p unrelated, AUC: no p
    assert (tmp_path / "figures" / "cases.png").is_file()


@pytest.mark.parametrize("name", ON_BERT)
def test_maf_only_options_are_refused(name, sample_text, sample_store, tmp_path):
    result = train_cli(sample_store, sample_text, tmp_path / "r", name, "--heads", "2")
    assert result.exit_code == 1
    assert (f"--model {name}: --heads is not for {model_class(name).title} (options of MAF, UMT-BERT-CRF, "
            "MT-BERT-CRF); leave it out") in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("name", ON_BERT)
def test_resume_on_bert_equals_an_uninterrupted_run(name, sample_text, sample_store, tmp_path):
    config = train_config(name, "paper", epochs=2, batch_size=16, lr=1e-3, seed=3, device="cpu", tensorboard=False)
    whole, resumed = whole_and_resumed(sample_store, sample_text, tmp_path, default_config(name, bert_size="tiny"),
                                       config, default_config("umt", bert_size="tiny"),
                                       rf"was trained with --model {name}; resume it with --model {name}, not umt")
    assert resumed == whole


@pytest.mark.slow
def test_maf_serve_reads_a_run_on_bert(bert_run):
    """`maf serve` browses the run (p absent), draws its attention and answers /api/predict."""
    from fastapi.testclient import TestClient

    from maf_core.serve import build

    _, run = bert_run
    with TestClient(build(run, device="cpu"), base_url=SERVE_BASE) as client:
        browse = client.get("/api/browse")
        assert browse.status_code == 200, browse.text
        predicted = (run / "predictions" / "test.jsonl").read_text().splitlines()
        assert len(browse.json()["tweets"]) == len(predicted)
        answer = client.post("/api/predict", json={"items": [{"text": "Rob at the beach"}]})
        assert answer.status_code == 200, answer.text
        item = answer.json()["items"][0]
        assert item["words"] == ["Rob", "at", "the", "beach"] and item.get("p") is None


@pytest.mark.parametrize("name", ON_WORDS)
def test_on_words_a_run_through_the_cli_that_every_reader_reads(name, sample_text, sample_store, tmp_path):
    run = tmp_path / "run"
    result = train_cli(sample_store, sample_text, run, name)
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["architecture"] == name
    assert saved["train"]["optimizer"] == model_class(name).train_defaults("paper")["optimizer"]  # sgd, adamw
    rows = [json.loads(x) for x in (run / "predictions" / "test.jsonl").read_text().splitlines()]
    assert rows and all(r["match_prob"] is None for r in rows)
    assert CliRunner().invoke(maf, ["evaluate", str(run), "--out", str(tmp_path / "eval")]).exit_code == 0
    tweets = tmp_path / "tweets.jsonl"
    tweets.write_text(json.dumps({"id": "t1", "text": "Rob at the beach", "image": rows[0]["id"]}) + "\n")
    predicted = CliRunner().invoke(maf, ["predict", str(run), "--input", str(tweets), "--features",
                                         saved["features"], "--out", str(tmp_path / "pred.jsonl")])
    assert predicted.exit_code == 0, predicted.output
    assert len(json.loads((tmp_path / "pred.jsonl").read_text())["tags"]) == 4
    done = CliRunner().invoke(maf, ["report", str(run), "--out", str(tmp_path / "figures"), "--case-run", str(run),
                                    "--ids", rows[0]["id"]])
    assert done.exit_code == 0, done.output
    assert f"| model | {model_class(name).title} |" in (run / "best" / "README.md").read_text()
    refused = train_cli(sample_store, sample_text, tmp_path / "r", name, "--bert", "x")
    assert refused.exit_code == 1 and f"--bert is not for {model_class(name).title}" in refused.output


@pytest.mark.parametrize("name", ON_WORDS)
def test_on_words_resume_equals_an_uninterrupted_run(name, sample_text, sample_store, tmp_path):
    config = train_config(name, "paper", epochs=2, batch_size=16, seed=3, device="cpu", tensorboard=False)
    whole, resumed = whole_and_resumed(sample_store, sample_text, tmp_path, default_config(name), config)
    assert resumed == whole


@pytest.mark.parametrize("name", [*ON_WORDS, "umt"])
def test_predict_from_new_images_gives_what_the_store_gives(name, sample_dir, sample_text, sample_store, tmp_path):
    """`maf predict --images`: the run's backbone extracts the images again, for these models as for
    MAF (tests/test_train.py): the tags of the store's features; a tweet whose image is not there is
    tagged from its text, its status named."""
    run = tmp_path / "run"
    flags = ["--bert-config", "tiny"] if "bert_size" in model_class(name).options else []
    result = train_cli(sample_store, sample_text, run, name, *flags)
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (run / "predictions" / "test.jsonl").read_text().splitlines()][:6]
    known = "".join(json.dumps({"id": r["id"], "words": r["words"], "image": r["id"]}) + "\n" for r in rows)
    gone = json.dumps({"id": "gone", "text": "Rob at the beach", "image": "no-such-image"}) + "\n"
    got = {}
    sources = {"store": (["--features", str(sample_store)], known),  # a store has only its own ids
               "images": (["--images", str(sample_dir / "images")], known + gone)}
    for source, (flag, lines) in sources.items():
        tweets = tmp_path / f"{source}-tweets.jsonl"
        tweets.write_text(lines)
        done = CliRunner().invoke(maf, ["predict", str(run), "--input", str(tweets), *flag, "--out",
                                        str(tmp_path / f"{source}.jsonl")])
        assert done.exit_code == 0, done.output
        got[source] = [json.loads(x) for x in (tmp_path / f"{source}.jsonl").read_text().splitlines()]
    assert [r["tags"] for r in got["images"][:6]] == [r["tags"] for r in got["store"]]
    assert [r["tags"] for r in got["store"][:6]] == [r["predicted"] for r in rows]  # what the run itself predicted
    assert got["images"][-1]["image_status"] != "ok" and len(got["images"][-1]["tags"]) == 4


# ---------------------------------------------------------------- the models themselves, on BERT and on words


@pytest.mark.parametrize("name", ON_BERT)
@pytest.mark.parametrize("crf_over", ["pieces", "words"])
def test_shapes_and_padding_invariance(name, crf_over):
    model = tiny_on_bert(name, crf_over=crf_over).eval()
    batch = make_batch(model.config, batch=5, seed=1)
    longer = make_batch(model.config, batch=5, seed=1, pad_to=batch["input_ids"].shape[1] + 6)
    with torch.no_grad():
        out = model(**model_inputs(batch), tags=batch["tags"], decode=True)
        padded = model(**model_inputs(longer), tags=longer["tags"], decode=True)
        alone = model(**{k: v[2:3] for k, v in model_inputs(batch).items()}, tags=batch["tags"][2:3], decode=True)
    mask = batch["word_mask"]
    assert out.emissions.shape == (5, mask.shape[1], len(model.config.crf_tags))
    assert out.attention.shape == (5, 1, batch["input_ids"].shape[1], model.config.num_regions)
    assert torch.allclose(out.attention.sum(-1), torch.ones(5, 1, batch["input_ids"].shape[1]))
    assert torch.allclose(out.emissions[mask], padded.emissions[mask], atol=1e-5)
    assert torch.allclose(out.emissions[2:3][mask[2:3]], alone.emissions[mask[2:3]], atol=1e-5)
    assert torch.allclose(out.loss, padded.loss, atol=1e-4) and out.tags == padded.tags
    assert [len(t) for t in out.tags] == mask.sum(1).tolist()
    assert out.match_prob is None and out.loss_ca is None and out.loss_cm is None and not model.has_p


@pytest.mark.parametrize("name", ON_BERT)
def test_every_parameter_gets_a_gradient(name):
    model = tiny_on_bert(name)
    batch = make_batch(model.config, batch=4)
    model(**model_inputs(batch), tags=batch["tags"]).loss.backward()
    assert [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []


@pytest.mark.parametrize("name", ON_BERT)
def test_a_missing_image_is_the_same_as_an_all_masked_image(name):
    """A tweet whose image status is not ok: its stray features change nothing, get no gradient, and
    the tweet differs from the same tweet with its image (so the test can fail)."""
    model = tiny_on_bert(name).eval()
    batch = make_batch(model.config, batch=4, seed=3)
    missing = dict(batch, image_ok=torch.tensor([True, False, True, True]))
    stray = dict(missing, regions=missing["regions"].clone())
    stray["regions"][1] = torch.randn_like(stray["regions"][1]) * 100
    stray["regions"].requires_grad_(True)
    zeroed = dict(missing, regions=missing["regions"].clone())
    zeroed["regions"][1] = 0.0
    a = model(**model_inputs(zeroed), tags=batch["tags"], decode=True)
    c = model(**model_inputs(stray), tags=batch["tags"], decode=True)
    assert torch.equal(a.emissions, c.emissions) and a.tags == c.tags and torch.equal(a.loss, c.loss)
    assert not c.attention[1].any()  # nothing attended to
    c.loss.backward()
    assert not stray["regions"].grad[1].any() and stray["regions"].grad[0].any()
    with_image = model(**model_inputs(batch))
    assert not torch.allclose(with_image.emissions[1], a.emissions[1])
    assert torch.allclose(with_image.emissions[0], a.emissions[0], atol=1e-6)


@pytest.mark.parametrize(("name", "init"), [("gvatt-bert-crf", "bert"), ("adacan-bert-crf", "default")])
def test_config_recipe_and_saving(name, init, tmp_path):
    config = default_config(name)
    assert (config.scheme, config.crf_over, config.init, config.dropout_on) == ("bio", "pieces", init, "text")
    assert not uses_amp(None, config, "cuda") and uses_amp(True, config, "cuda")
    recipe = train_config(name, "paper")
    assert (recipe.optimizer, recipe.batching, recipe.batch_size, recipe.lr) == ("bertadam", "random", 32, 5e-5)
    cls = model_class(name)
    with pytest.raises(ValueError, match=f"architecture {name} with CA, CM or text_only"):
        cls(MAFConfig.tiny(architecture=name))
    model = tiny_on_bert(name).eval()
    model.save_pretrained(tmp_path / "m")
    again = load_model(tmp_path / "m")
    batch = make_batch(model.config, batch=3, seed=4)
    with torch.no_grad():
        assert torch.equal(model(**model_inputs(batch)).emissions, again(**model_inputs(batch)).emissions)
    assert type(again) is cls and f"# {cls.title}" in (tmp_path / "m" / "README.md").read_text()


@pytest.mark.shortcuts
@pytest.mark.parametrize("name", ON_BERT)
@pytest.mark.parametrize("informative", [False, True])
def test_the_image_decides_a_word_only_when_it_carries_the_class(name, informative):
    """Trained where one word's tag (B-PER or B-LOC) is decided by the image's class, the model tells
    the two apart on held-out tweets (which tag scores higher) at chance when the images are noise
    (nothing else tells the classes apart: no shortcut through padding, length or other rows) and
    all but perfectly when they show the class."""
    model = tiny_on_bert(name)
    accuracy = train_and_tag_the_ambiguous_word(model, image_decided_tweets(model.config, 256, informative, 1),
                                                image_decided_tweets(model.config, 200, informative, 2))
    assert accuracy >= 0.95 if informative else 0.35 <= accuracy <= 0.65


@pytest.mark.parametrize("name", ON_WORDS)
def test_on_words_every_parameter_gets_a_gradient_and_a_missing_image_is_masked(name):
    model = tiny_on_words(name)
    batch = make_batch(model.config, batch=4, seed=3)
    model(**model_inputs(batch), tags=batch["tags"]).loss.backward()
    assert [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()] == []
    model.eval()
    missing = dict(batch, image_ok=torch.tensor([True, False, True, True]))
    stray = dict(missing, regions=missing["regions"].clone())
    stray["regions"][1] = torch.randn_like(stray["regions"][1]) * 100
    with torch.no_grad():
        a, c, full = (model(**model_inputs(x)) for x in (missing, stray, batch))
    assert torch.equal(a.emissions, c.emissions) and not c.attention[1].any()
    assert not torch.allclose(full.emissions[1], a.emissions[1])


@pytest.mark.shortcuts
@pytest.mark.parametrize("name", ON_WORDS)
@pytest.mark.parametrize("informative", [False, True])
def test_on_words_the_image_decides_a_word_only_when_it_carries_the_class(name, informative):
    config = tiny_on_words(name).config
    train_set = image_decided_tweets(config, 256, informative, 1)
    model = tiny_on_words(name, words=chars_to_words(train_set["word_chars"], train_set["word_mask"]))
    accuracy = train_and_tag_the_ambiguous_word(model, train_set, image_decided_tweets(config, 200, informative, 2))
    assert accuracy >= 0.95 if informative else 0.35 <= accuracy <= 0.65
