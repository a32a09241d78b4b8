"""`maf train`, `evaluate`, `score`: runs, resumes to the same result, refuses mismatched inputs."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli.maf import main as maf
from maf_core.config import MAFConfig, TrainConfig
from maf_core.data import load_split
from maf_core.predict import MAFPredictor
from maf_core.run import RunDirectory
from maf_core.train import train
from pipeline.conll import Tweet, write_conll
from pipeline.errors import DataError
from pipeline.extract import ExtractConfig, extract_images, ids_from_corpus
from pipeline.store import FeatureStore
from pipeline.tokenization import tokenize_corpus

CONFIG = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=3, device="cpu")


def tiny_config(**overrides) -> MAFConfig:
    return MAFConfig.tiny(**{"scheme": "bioes", **overrides})


@pytest.fixture(scope="module")
def corpus(sample_text, sample_store, tmp_path_factory) -> dict:
    return {"text": sample_text, "store": sample_store, "root": tmp_path_factory.mktemp("train")}


@pytest.fixture(scope="module")
def whole(corpus) -> dict:
    """A tiny MAF trained for CONFIG's two epochs without a break: its directory and report. Tests
    read it; one that writes into a run (`maf evaluate` without --out, a resume) works on a copy."""
    run = corpus["root"] / "whole"
    return {"run": run, "report": train(FeatureStore(corpus["store"]), corpus["text"], run, tiny_config(), CONFIG)}


@pytest.fixture(scope="module")
def other_store(sample_dir, tmp_path_factory) -> Path:
    """Every image of `sample_dir` extracted as `sample_store` but with another random-weights seed."""
    out = tmp_path_factory.mktemp("other-store") / "other.h5"
    extract_images(sample_dir / "images", out, ExtractConfig(backbone="resnet18", weights="none", workers=0, seed=5),
                   ids=ids_from_corpus(sample_dir))
    return out


@pytest.fixture(scope="module")
def other_text(sample_dir, other_tokenizer_dir, tmp_path_factory) -> Path:
    """`sample_dir` tokenized with `other_tokenizer_dir`: the same corpus, another vocabulary."""
    out = tmp_path_factory.mktemp("other-text") / "othertext"
    tokenize_corpus(sample_dir, str(other_tokenizer_dir), out, max_length=64)
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _metrics(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if not k.endswith("seconds")} for line in lines]


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# a run and its outputs


@pytest.fixture()
def fingerprint_checks(monkeypatch) -> list[str]:
    """What RunDirectory.check_fingerprint, the one check that features belong to a run, was asked
    about (it still checks): the refusals below must come from it."""
    asked, check = [], RunDirectory.check_fingerprint

    def spy(self, fingerprint, what, fix=""):
        asked.append(what)
        return check(self, fingerprint, what, fix)

    monkeypatch.setattr(RunDirectory, "check_fingerprint", spy)
    return asked


def test_the_report_names_the_best_epoch_the_encoder_and_both_scores(whole):
    assert set(whole["report"]) == {"best_epoch", "encoder", "images", "valid", "test"}  # no "notes": it saw images


def test_a_run_writes_its_config_weights_metrics_and_predictions(whole):
    for name in ("config.json", "metrics.jsonl", "last.pt", "report.json", "best/model.safetensors", "best/config.json",
                 "predictions/test.conll", "predictions/test.jsonl", "predictions/valid.conll"):
        assert (whole["run"] / name).is_file(), name


def test_resume_equals_an_uninterrupted_run(whole, corpus, tmp_path):
    class Stop(Exception):
        pass

    def stop_after_first(epoch: int) -> None:
        if epoch == 1:
            raise Stop

    cut = tmp_path / "cut"
    with pytest.raises(Stop):
        train(FeatureStore(corpus["store"]), corpus["text"], cut, tiny_config(), CONFIG, on_epoch_end=stop_after_first)
    assert len(_metrics(cut)) == 1
    resumed = train(FeatureStore(corpus["store"]), corpus["text"], cut, tiny_config(), CONFIG, resume=True)
    assert _metrics(cut) == _metrics(whole["run"])
    assert resumed == whole["report"]
    a = torch.load(whole["run"] / "last.pt", weights_only=True)["model"]
    b = torch.load(cut / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    own = whole["run"] / "predictions" / "test.conll"
    assert (cut / "predictions" / "test.conll").read_bytes() == own.read_bytes()


def test_test_predictions_have_a_row_per_tweet_and_a_probability(whole, corpus):
    rows = _rows(whole["run"] / "predictions" / "test.jsonl")
    meta = json.loads((corpus["text"] / "meta.json").read_text())
    assert len(rows) == meta["splits"]["test"]["tweets"]
    assert all(0.0 <= r["match_prob"] <= 1.0 for r in rows)


def test_a_tweet_without_an_image_has_match_prob_exactly_zero(whole, corpus):
    rows = _rows(whole["run"] / "predictions" / "test.jsonl")
    status = dict(zip(FeatureStore(corpus["store"]).image_ids, FeatureStore(corpus["store"]).status))
    assert all((r["match_prob"] == 0.0) == (status[r["id"]] != 0) for r in rows)


def test_score_of_the_predictions_gives_the_reported_f1(whole, tmp_path):
    gold = tmp_path / "gold.conll"
    write_conll([Tweet(r["id"], r["words"], r["gold"], 0) for r in _rows(whole["run"] / "predictions" / "test.jsonl")],
                gold)
    result = CliRunner().invoke(maf, ["score", str(gold), str(whole["run"] / "predictions" / "test.conll")])
    assert result.exit_code == 0, result.output
    assert f"{whole['report']['test']['overall']['f1']:8.2f}" in result.output


def test_evaluate_gives_the_reported_f1(whole, tmp_path):
    result = CliRunner().invoke(maf, ["evaluate", str(_copy(whole["run"], tmp_path)), "--split", "test"])
    assert result.exit_code == 0, result.output
    assert f"{whole['report']['test']['overall']['f1']:8.2f}" in result.output


def test_score_of_a_missing_file_is_refused(tmp_path):
    result = CliRunner().invoke(maf, ["score", str(tmp_path / "missing.txt")])
    assert result.exit_code == 1 and "no such file" in result.output


# what a new run refuses


def test_a_model_of_another_tag_scheme_is_refused(corpus, tmp_path):
    with pytest.raises(DataError, match=r"tokenized with tag scheme 'bioes', but the model expects 'bio'"):
        train(FeatureStore(corpus["store"]), corpus["text"], tmp_path / "run", tiny_config(scheme="bio"), CONFIG)


def test_a_store_without_some_of_the_text_s_images_is_refused(corpus, tmp_path, sample_dir):
    partial = tmp_path / "partial.h5"
    extract_images(sample_dir / "images", partial, ExtractConfig(backbone="resnet18", weights="none", workers=0),
                   ids=ids_from_corpus(sample_dir)[:20])
    with pytest.raises(DataError, match=r"partial.h5: \d+ image ids of .*train.arrow are not in the store, e\.g\. "):
        train(FeatureStore(partial), corpus["text"], tmp_path / "run", tiny_config(), CONFIG)


def test_a_non_empty_output_without_resume_is_refused(corpus, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("x")
    with pytest.raises(DataError, match="exists and is not empty; pass --resume"):
        train(FeatureStore(corpus["store"]), corpus["text"], tmp_path / "run", tiny_config(), CONFIG)


def test_resume_without_last_pt_is_refused(corpus, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("x")
    with pytest.raises(DataError, match="no last.pt to resume from"):
        train(FeatureStore(corpus["store"]), corpus["text"], tmp_path / "run", tiny_config(), CONFIG, resume=True)


def test_a_bert_with_another_vocabulary_than_the_text_s_is_refused(corpus, tmp_path, other_tokenizer_dir):
    with pytest.raises(DataError, match=r"tokenized with .*tok \(vocab sha256 \w+\), but --bert "
                       r".*othertok has vocab sha256 \w+; tokenize again with --tokenizer"):
        train(FeatureStore(corpus["store"]), corpus["text"], tmp_path / "run",
              tiny_config(bert=str(other_tokenizer_dir)), CONFIG)


# what a resume refuses


def test_resume_refuses_a_store_with_another_fingerprint(whole, corpus, other_store, tmp_path, fingerprint_checks):
    with pytest.raises(DataError, match=r"other.h5: does not belong to the run .*: extracted with other settings "
                                        r"than the store it was trained on .*weights\..*; resume with the run's store"):
        train(FeatureStore(other_store), corpus["text"], _copy(whole["run"], tmp_path), tiny_config(), CONFIG,
              resume=True)
    assert fingerprint_checks == [str(other_store.resolve())]


def test_resume_refuses_other_training_settings(whole, corpus, tmp_path):
    with pytest.raises(DataError, match=r"was started with other training settings .*resume with the same ones"):
        train(FeatureStore(corpus["store"]), corpus["text"], _copy(whole["run"], tmp_path), tiny_config(),
              replace(CONFIG, lr=5e-4), resume=True)


def test_resume_refuses_text_of_another_tokenizer(whole, corpus, other_text, tmp_path):
    with pytest.raises(DataError, match=r"othertext: tokenized with .*othertok \(vocab sha256 \w+\), but the run "
                       r".*run \(tokenizer .*\) has vocab sha256 \w+"):
        train(FeatureStore(corpus["store"]), other_text, _copy(whole["run"], tmp_path), tiny_config(), CONFIG,
              resume=True)


def test_resume_refuses_another_number_of_processes(whole, corpus, tmp_path):
    run = _copy(whole["run"], tmp_path)
    state = torch.load(run / "last.pt", weights_only=True)
    state["rng"] = state["rng"] * 2  # as if saved by a 2-process run
    torch.save(state, run / "last.pt")
    with pytest.raises(DataError, match="was trained on 2 processes; resume it on the same number, not 1"):
        train(FeatureStore(corpus["store"]), corpus["text"], run, tiny_config(), CONFIG, resume=True)


# maf evaluate on other data: the run's tokenizer and extraction settings, or a clear refusal


def test_evaluate_refuses_text_of_another_tokenizer(whole, other_text, tmp_path):
    done = CliRunner().invoke(maf, ["evaluate", str(_copy(whole["run"], tmp_path)), "--text", str(other_text)])
    assert done.exit_code == 1 and "but the run" in done.output and "tokenize it again" in done.output, done.output


def test_evaluate_refuses_a_store_extracted_with_other_settings(whole, other_store, tmp_path, fingerprint_checks):
    done = CliRunner().invoke(maf, ["evaluate", str(_copy(whole["run"], tmp_path)), "--features", str(other_store)])
    assert done.exit_code == 1 and f"Error: {other_store}: does not belong to the run" in done.output, done.output
    assert "weights." in done.output and "maf predict --images" in done.output
    assert fingerprint_checks == [str(other_store)]


def test_report_refuses_a_store_extracted_with_other_settings(whole, other_store, tmp_path, fingerprint_checks):
    done = CliRunner().invoke(maf, ["report", str(whole["run"]), "--features", str(other_store),
                                    "--out", str(tmp_path / "figures")])
    assert done.exit_code == 1 and f"Error: {other_store}: does not belong to the run" in done.output, done.output
    assert fingerprint_checks == [str(other_store)]


def test_serve_refuses_a_store_extracted_with_other_settings(whole, other_store, fingerprint_checks):
    from maf_core.serve.browse import Browse

    with pytest.raises(DataError, match=f"{other_store}: does not belong to the run"):
        Browse(whole["run"], features=other_store)
    assert fingerprint_checks == [str(other_store)]


def test_evaluate_on_text_tokenized_again_gives_the_run_s_predictions(whole, sample_dir, tokenizer_dir, tmp_path):
    run = _copy(whole["run"], tmp_path)
    tokenize_corpus(sample_dir, str(tokenizer_dir), tmp_path / "again", max_length=64)
    done = CliRunner().invoke(maf, ["evaluate", str(run), "--text", str(tmp_path / "again"), "--split", "valid"])
    assert done.exit_code == 0, done.output
    assert (run / "predictions-again" / "valid.conll").is_file()
    assert (run / "predictions-again" / "valid.jsonl").read_text() == (run / "predictions" / "valid.jsonl").read_text()


def test_evaluate_takes_a_store_that_differs_only_in_library_versions(whole, corpus, tmp_path):
    """One rule for a run and a store: every fingerprint field but the library versions must agree."""
    relabelled = tmp_path / "versions.h5"
    shutil.copy(corpus["store"], relabelled)
    with h5py.File(relabelled, "r+") as f:
        fingerprint = json.loads(f.attrs["fingerprint"])
        fingerprint["versions"]["torch"] = "0.0.1"
        f.attrs["fingerprint"] = json.dumps(fingerprint)
    done = CliRunner().invoke(maf, ["evaluate", str(whole["run"]), "--features", str(relabelled), "--split", "valid",
                                    "--out", str(tmp_path / "relabelled")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "relabelled" / "valid.jsonl").read_text() == \
        (whole["run"] / "predictions" / "valid.jsonl").read_text()


def test_score_matches_a_hand_computed_conlleval_example(tmp_path):
    # gold: PER(0-1) LOC(3) | ORG from an ill-formed I-ORG, MISC ; predicted: PER(0-1) ORG(3) | ORG, nothing
    text = ("Rob B-PER B-PER\nSmith I-PER I-PER\nin O O\nParis B-LOC B-ORG\n\n"
            "Apple I-ORG I-ORG\nand O O\nLinux B-MISC O\n")
    path = tmp_path / "three.txt"
    path.write_text(text)
    result = CliRunner().invoke(maf, ["score", str(path)])
    assert result.exit_code == 0, result.output
    # correct 2 (PER, ORG) of 3 predicted and 4 gold: P 66.67, R 50.00, F1 57.14
    assert "66.67   50.00   57.14" in result.output
    assert "PER    P 100.00  R 100.00  F1 100.00  (1 gold)" in result.output
    assert "ORG    P  50.00  R 100.00  F1  66.67  (1 gold)" in result.output


def test_score_refuses_a_line_without_a_predicted_tag(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("Rob B-PER\n")
    result = CliRunner().invoke(maf, ["score", str(bad)])
    assert result.exit_code == 1 and "bad.txt:1: expected 'word gold predicted'" in result.output


def test_several_seeds_give_a_summary(corpus, tmp_path):
    result = CliRunner().invoke(maf, ["train", "--features", str(corpus["store"]), "--text", str(corpus["text"]),
                                      "--out", str(tmp_path / "runs"), "--bert-config", "tiny", "--epochs", "1",
                                      "--batch-size", "32", "--seeds", "1,2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "runs" / "summary.json").read_text())
    f1 = [
        json.loads((tmp_path / "runs" / f"seed-{s}" / "report.json").read_text())["test"]["overall"]["f1"]
        for s in (1, 2)
    ]
    assert summary["seeds"] == [1, 2]
    assert abs(summary["test"]["overall"]["f1"]["mean"] - sum(f1) / 2) < 1e-9
    assert abs(summary["test"]["overall"]["f1"]["std"] - abs(f1[0] - f1[1]) / 2) < 1e-9
    assert "test (2 seeds)" in result.output and "±" in result.output


def test_seeds_that_are_not_integers_are_refused(corpus, tmp_path):
    result = CliRunner().invoke(maf, ["train", "--features", str(corpus["store"]), "--text", str(corpus["text"]),
                                      "--out", str(tmp_path / "x"), "--seeds", "1,a"])
    assert result.exit_code == 1 and "--seeds '1,a': expected comma-separated integers" in result.output


def test_config_file_gives_defaults_and_flags_win(corpus, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(f"features: {corpus['store']}\ntext: {corpus['text']}\nbert-config: tiny\n"
                      f"epochs: 1\nbatch_size: 64\nseed: 7\ndevice: cpu\nmatching-head: bilinear\nhead_lr: 0.002\n")
    result = CliRunner().invoke(maf, ["train", "--config", str(config), "--out", str(tmp_path / "run"), "--seed", "8",
                                      "--swap", "image", "--ner-pairs", "true"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["seed"] == 8 and saved["train"]["batch_size"] == 64 and saved["train"]["epochs"] == 1
    assert saved["train"]["head_lr"] == 0.002
    assert saved["model"]["bert_size"] == "tiny"
    assert (saved["model"]["swap"], saved["model"]["matching_head"], saved["model"]["ner_pairs"]) == \
        ("image", "bilinear", "true")


def test_unknown_keys_in_a_config_file_are_refused(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 1\nlearning_rate: 0.1\n")
    result = CliRunner().invoke(maf, ["train", "--config", str(config), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "train.yaml: unknown keys learning_rate; known:" in result.output


@pytest.fixture(scope="module")
def bn_run(corpus, sample_dir, tmp_path_factory) -> dict:
    """A one-epoch run on a store whose backbone has AdaBN statistics; the first 6 test tweets
    it predicted, as `expected`, and those tweets as `items`. Tests read it."""
    root = tmp_path_factory.mktemp("bn-run")
    store = root / "store.h5"
    extract_images(sample_dir / "images", store, ExtractConfig(backbone="resnet18", weights="none", workers=0,
                   shard_size=64, bn_stats="dataset", bn_samples=16), ids=ids_from_corpus(sample_dir))
    run = root / "run"
    train(FeatureStore(store), corpus["text"], run, tiny_config(), replace(CONFIG, epochs=1))
    expected = _rows(run / "predictions" / "test.jsonl")[:6]
    return {"store": store, "run": run, "expected": expected,
            "items": [{"id": r["id"], "words": r["words"]} for r in expected]}


@pytest.fixture()
def predictor(bn_run):
    return MAFPredictor.from_pretrained(bn_run["run"])


def test_a_run_on_an_adabn_store_keeps_the_backbone_statistics(bn_run):
    assert (bn_run["run"] / "backbone_bn.npz").is_file()


def test_predict_from_the_store_gives_the_run_s_predictions(bn_run, predictor):
    by_store = predictor.predict(bn_run["items"], features=bn_run["store"])
    for want, got in zip(bn_run["expected"], by_store):
        assert got["tags"] == want["predicted"]
        assert abs(got["match_prob"] - want["match_prob"]) < 1e-5


def test_predict_from_images_gives_the_run_s_predictions(bn_run, predictor, sample_dir):
    by_images = predictor.predict(bn_run["items"], images_dir=sample_dir / "images")  # extracted again, same backbone
    for want, got in zip(bn_run["expected"], by_images):
        assert got["tags"] == want["predicted"]
        assert abs(got["match_prob"] - want["match_prob"]) < 1e-4


def test_predict_from_image_bytes_gives_the_run_s_predictions(bn_run, predictor, sample_dir):
    images = {r["id"]: (sample_dir / "images" / f"{r['id']}.jpg").read_bytes() for r in bn_run["expected"]}
    by_bytes = predictor.predict(bn_run["items"], images=images)  # in memory, the run's AdaBN backbone
    for want, got in zip(bn_run["expected"], by_bytes):
        assert got["tags"] == want["predicted"] and got["image_status"] == "ok"
        assert abs(got["match_prob"] - want["match_prob"]) < 1e-4


def test_predict_refuses_a_store_extracted_with_other_settings(bn_run, predictor, corpus, fingerprint_checks):
    with pytest.raises(DataError, match=r"store.h5: does not belong to the run .*bn_stats\.mode: 'imagenet' there"):
        predictor.predict(bn_run["items"], features=corpus["store"])
    assert fingerprint_checks == [str(corpus["store"])]


def test_predict_refuses_new_images_extracted_with_other_settings(bn_run, predictor, sample_dir, monkeypatch,
                                                                  fingerprint_checks):
    """As `maf serve` extracts uploads: images given as bytes, through MAFPredictor's own backbone."""
    run_settings = predictor._extract_config
    monkeypatch.setattr(predictor, "_extract_config",
                        lambda weights: replace(run_settings(weights), transform="maf-crop"))
    images = {r["id"]: (sample_dir / "images" / f"{r['id']}.jpg").read_bytes() for r in bn_run["expected"]}
    with pytest.raises(DataError, match=r"new images: does not belong to the run .*name: 'maf-crop' there"):
        predictor.predict(bn_run["items"], images=images)
    assert fingerprint_checks == ["new images"]


def test_predict_with_maf_refuses_tweets_without_image_features(bn_run, predictor):
    with pytest.raises(DataError, match="MAF needs image features"):
        predictor.predict(bn_run["items"])


def test_predict_refuses_images_for_a_run_on_an_older_random_init(bn_run, predictor, sample_dir):
    older = RunDirectory(bn_run["run"])  # a run on stores made before --weights none's current init
    older.record["store_fingerprint"]["weights"]["identity"] = "random:0"
    with pytest.raises(DataError, match=r"random backbone weights of an older init \(random:0\)"):
        MAFPredictor(predictor.model, older, predictor.tokenizer, predictor.device).predict(
            bn_run["items"], images_dir=sample_dir / "images")


def test_cli_predict_reads_jsonl_and_extracts_the_images(bn_run, sample_dir, tmp_path):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps({"id": r["id"], "text": " ".join(r["words"])})
                               for r in bn_run["expected"]) + "\n")
    result = CliRunner().invoke(maf, ["predict", str(bn_run["run"]), "--input", str(jsonl), "--images",
                                      str(sample_dir / "images"), "--out", str(tmp_path / "preds.jsonl")])
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "preds.jsonl")
    assert [r["tags"] for r in rows] == [r["predicted"] for r in bn_run["expected"]]


def test_cli_predict_reads_conll_whose_imgids_name_the_tweets(bn_run, tmp_path):
    conll = tmp_path / "in.txt"
    conll.write_text("".join(f"IMGID:{r['id']}\n" + "".join(f"{w}\tO\n" for w in r["words"]) + "\n"
                             for r in bn_run["expected"]))
    result = CliRunner().invoke(maf, ["predict", str(bn_run["run"]), "--input", str(conll), "--features",
                                      str(bn_run["store"]), "--out", str(tmp_path / "preds-conll.jsonl")])
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "preds-conll.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in bn_run["expected"]]
    assert [r["tags"] for r in rows] == [r["predicted"] for r in bn_run["expected"]]


def test_cli_predict_refuses_a_line_that_is_not_json(bn_run, tmp_path):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"id": 1, "text": "a"}\nnot json\n')
    result = CliRunner().invoke(maf, ["predict", str(bn_run["run"]), "--input", str(jsonl), "--out",
                                      str(tmp_path / "p.jsonl")])
    assert result.exit_code == 1 and "in.jsonl:2: not a JSON object" in result.output


def _online_args(corpus) -> list[str]:
    return ["train", "--text", str(corpus["text"]), "--bert-config", "tiny", "--epochs", "1", "--batch-size", "32",
            "--device", "cpu"]


def test_train_without_features_or_images_is_refused(corpus, tmp_path):
    result = CliRunner().invoke(maf, [*_online_args(corpus), "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "give exactly one of --features store.h5" in result.output


def test_online_baseline_runs_the_backbone_in_every_step(corpus, tmp_path, sample_dir):
    args = _online_args(corpus)
    result = CliRunner().invoke(maf, [*args, "--out", str(tmp_path / "online"), "--images", str(sample_dir / "images"),
                                      "--backbone", "resnet18", "--weights", "none"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "online" / "config.json").read_text())
    assert saved["store_fingerprint"]["backbone"] == "resnet18" and saved["features"] == str(sample_dir / "images")
    rows = [json.loads(x) for x in (tmp_path / "online" / "predictions" / "test.jsonl").read_text().splitlines()]
    assert len(rows) > 0


@pytest.mark.slow
def test_torchrun_launch_writes_one_run(corpus, tmp_path):
    """The documented launch, 2 CPU processes (gloo): one run directory, every test tweet predicted once."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "cli.maf",
            "train",
            "--features",
            str(corpus["store"]),
            "--text",
            str(corpus["text"]),
            "--out",
            str(out),
            "--bert-config",
            "tiny",
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x 2 processes" in done.stderr
    assert done.stdout.count("best epoch") == 1  # tables from the first process only
    assert len(_metrics(out)) == 2
    predicted = (out / "predictions" / "test.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in predicted] == load_split(corpus["text"], "test").image_ids


@pytest.fixture(scope="module")
def report_of_two_runs(whole, corpus, tmp_path_factory) -> dict:
    """`maf report` of the `whole` MAF run beside a text-only run of the same settings: its
    folder and the command's result."""
    root = tmp_path_factory.mktemp("report")
    maf_run, text_run = root / "maf", root / "text-only"
    shutil.copytree(whole["run"], maf_run)  # named as the table shows it
    train(FeatureStore(corpus["store"]), corpus["text"], text_run, tiny_config(text_only=True), CONFIG)
    out = root / "report"
    done = CliRunner().invoke(maf, ["report", str(maf_run), str(text_run), "--out", str(out), "--count", "2"])
    return {"out": out, "done": done}


def test_report_draws_every_figure(report_of_two_runs):
    assert report_of_two_runs["done"].exit_code == 0, report_of_two_runs["done"].output
    for name in ("curves", "types", "match", "cases"):
        with Image.open(report_of_two_runs["out"] / f"{name}.png") as image:
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert image.size[0] > 400 and pixels.std() > 10, name  # drawn, not blank


def test_report_compares_the_runs_in_a_table(report_of_two_runs):
    assert report_of_two_runs["done"].exit_code == 0, report_of_two_runs["done"].output
    table = (report_of_two_runs["out"] / "comparison.txt").read_text().splitlines()
    assert table[0].split()[:3] == ["run", "test", "F1"]
    assert [line.split()[:2] for line in table[1:3]] == [["maf", "*"], ["text-only", "*"]]  # random encoders
    assert table[3].startswith("* a RANDOM-init text encoder")


def test_report_prints_the_image_decided_scores(report_of_two_runs):
    assert "img-decided F1" in report_of_two_runs["done"].output


def test_report_names_the_version_of_the_corpus_the_runs_were_trained_on(report_of_two_runs, corpus):
    """corpus.txt, and the command's output: each split's source sha256 and counts, once for both runs."""
    written = (report_of_two_runs["out"] / "corpus.txt").read_text(encoding="utf-8")
    train_sha = json.loads((corpus["text"] / "meta.json").read_text(encoding="utf-8"))["splits"]["train"]["sha256"]
    assert written.startswith(f"corpus of every run: train sha256 {train_sha[:12]} (")
    assert written.strip() in report_of_two_runs["done"].output


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    done = CliRunner().invoke(maf, ["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "report")])
    assert done.exit_code == 1 and "not a run directory" in done.output


def test_report_refuses_ids_of_no_tweet(whole, tmp_path):
    done = CliRunner().invoke(maf, ["report", str(whole["run"]), "--out", str(tmp_path / "report"), "--ids",
                                    "no-such-id"])
    assert done.exit_code == 1 and "no tweets with ids no-such-id" in done.output


def test_released_code_preset_trains_and_evaluates_from_the_cli(corpus, tmp_path, sample_dir, tokenizer_dir):
    """BIO text, BertAdam, random batches, CM over all 128 padded positions, a CRF over pieces."""
    text = tmp_path / "text-bio"
    tokenize_corpus(sample_dir, str(tokenizer_dir), text, max_length=64, scheme="bio")
    run = tmp_path / "released"
    result = CliRunner().invoke(
        maf,
        [
            "train",
            "--features",
            str(corpus["store"]),
            "--text",
            str(text),
            "--out",
            str(run),
            "--preset",
            "released-code",
            "--bert-config",
            "tiny",
            "--epochs",
            "2",
            "--batch-size",
            "24",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "config.json").read_text())
    assert (saved["train"]["optimizer"], saved["train"]["batching"]) == ("bertadam", "random")
    assert (saved["model"]["crf_over"], saved["model"]["matching_positions"], saved["model"]["negatives"]) == \
        ("pieces", "all", "tail")
    report = json.loads((run / "report.json").read_text())
    result = CliRunner().invoke(maf, ["evaluate", str(run), "--split", "test"])
    assert result.exit_code == 0, result.output
    assert f"{report['test']['overall']['f1']:8.2f}" in result.output


def test_a_shortcut_combination_is_refused_in_one_line(corpus, tmp_path):
    result = CliRunner().invoke(maf, ["train", "--features", str(corpus["store"]), "--text", str(corpus["text"]),
                                      "--out", str(tmp_path / "run"), "--preset", "recommended", "--swap", "c",
                                      "--bert-config", "tiny", "--epochs", "1"])
    assert result.exit_code == 1
    assert "--preset recommended --swap c" in result.output and "compare text with text" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()
