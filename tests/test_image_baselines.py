"""The image baselines of Table 2 (GVATT and AdaCAN, on BERT and on words) through the CLI and the
trainer, one test per behaviour for all four: every reader reads a run, MAF's options are refused,
`--bert` is refused for the word-level ones, resume equals an uninterrupted run, `maf serve` reads
a BERT one. Their equations, padding and shortcut tests: tests/test_gvatt.py, tests/test_adacan.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import SERVE_BASE, whole_and_resumed

from cli.maf import main as maf
from maf_core.models import default_config, model_class, train_config

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
