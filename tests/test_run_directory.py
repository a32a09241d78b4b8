"""A run directory stands on its own: safetensors weights, MAF.save_pretrained/from_pretrained,
older pickled runs, refused pickles, and a run used from elsewhere or after being moved."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli.maf import main as maf
from maf_core.config import MAFConfig, TrainConfig
from maf_core.data import collate, load_split
from maf_core.model import MAF, MODEL_KEYS
from maf_core.predict import MAFPredictor
from maf_core.run import RunDirectory
from maf_core.train import train
from pipeline.errors import DataError
from pipeline.store import FeatureStore
from pipeline.tokenization import tokenize_corpus

CONFIG = TrainConfig(epochs=1, batch_size=16, lr=1e-3, seed=3, device="cpu")


@pytest.fixture(scope="module")
def trained(sample_dir, tokenizer_dir, sample_store, tmp_path_factory) -> Path:
    """A tiny run trained from its project directory with relative paths, as `make demo` does."""
    project = tmp_path_factory.mktemp("project")
    shutil.copytree(tokenizer_dir, project / "tok")
    shutil.copy(sample_store, project / "store.h5")
    before = os.getcwd()
    os.chdir(project)
    try:
        tokenize_corpus(sample_dir, "tok", Path("text"), max_length=64)
        train(FeatureStore("store.h5"), "text", "run", MAFConfig.tiny(scheme="bioes"), CONFIG)
    finally:
        os.chdir(before)
    return project


def _emissions(model: MAF, project: Path) -> torch.Tensor:
    split = load_split(project / "text", "test")
    batch = collate(split, list(range(8)), FeatureStore(project / "store.h5"))
    with torch.no_grad():
        return model(**{k: batch[k] for k in MODEL_KEYS}, decode=True).emissions


def test_best_is_safetensors_beside_its_config_and_model_card(trained):
    best = trained / "run" / "best"
    assert sorted(p.name for p in best.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert (best / "model.safetensors").read_bytes()[8:9] == b"{"  # a safetensors header, not a zip or pickle


def test_the_model_card_says_what_the_run_is_and_its_scores(trained):
    card = (trained / "run" / "best" / "README.md").read_text(encoding="utf-8")
    report = json.loads((trained / "run" / "report.json").read_text())
    assert card.startswith("---\nlibrary_name: maf\n")
    assert "| model | MAF, settings of no preset (config.json) |" in card  # MAFConfig.tiny is no preset
    assert "| tag scheme | bioes |" in card and "| image features | resnet18, weights random:" in card
    assert f"| best epoch | {report['best_epoch']} |" in card
    test = report["test"]["overall"]
    assert f"| test | {test['precision']:.2f} | {test['recall']:.2f} | {test['f1']:.2f} |" in card


def test_a_saved_model_loads_by_hub_name_from_the_hugging_face_cache(trained, tmp_path):
    """A Hub name resolves through huggingface_hub (offline here: a cache laid out as a download leaves it)."""
    snapshot = tmp_path / "cache" / "models--someone--maf-tiny" / "snapshots" / "0123abcd"
    MAF.from_pretrained(trained / "run").save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    model = MAF.from_pretrained("someone/maf-tiny", cache_dir=tmp_path / "cache", local_files_only=True)
    assert not model.training
    assert torch.equal(_emissions(model, trained), _emissions(MAF.from_pretrained(trained / "run"), trained))


def test_save_and_load_give_identical_emissions(trained, tmp_path):
    model = MAF.from_pretrained(trained / "run")  # the run directory: its best/
    model.save_pretrained(tmp_path / "copy")
    again = MAF.from_pretrained(tmp_path / "copy")
    assert again.config == model.config
    assert torch.equal(_emissions(model, trained), _emissions(again, trained))


def test_a_run_with_the_older_model_pt_still_loads_with_a_notice(trained, tmp_path, caplog):
    old = tmp_path / "old"
    shutil.copytree(trained / "run", old)
    model = MAF.from_pretrained(old)
    torch.save(model.state_dict(), old / "best" / "model.pt")
    (old / "best" / "model.safetensors").unlink()
    with caplog.at_level(logging.WARNING):
        loaded = RunDirectory.open(old).load_best()
    assert "older torch pickle format" in caplog.text and "model.pt" in caplog.text
    assert torch.equal(_emissions(model, trained), _emissions(loaded, trained))


class _RunsCode:
    """A pickle that would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("target", ["best/model.pt", "last.pt"])
def test_a_pickle_that_runs_code_is_refused_before_it_runs(trained, tmp_path, target):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    (run / "best" / "model.safetensors").unlink(missing_ok=target == "best/model.pt")
    marker = tmp_path / "pwned"
    torch.save({"weights": _RunsCode(marker)}, run / target)
    with pytest.raises(DataError, match=rf"{target}: not a state dict of plain tensors: unpickling it would import "
                                        r"\w+\.system; refused before it runs"):
        if target == "last.pt":
            RunDirectory(run).load_last()
        else:
            MAF.from_pretrained(run)
    assert not marker.exists()


def test_maf_evaluate_refuses_a_malicious_checkpoint_in_one_line(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    (run / "best" / "model.safetensors").unlink()
    torch.save(_RunsCode(tmp_path / "pwned"), run / "best" / "model.pt")
    done = CliRunner().invoke(maf, ["evaluate", str(run)])
    assert done.exit_code == 1 and "Traceback" not in done.output and len(done.output.strip().splitlines()) == 1
    assert "model.pt: not a state dict of plain tensors" in done.output and not (tmp_path / "pwned").exists()


def test_weights_that_are_not_safetensors_or_of_another_model_are_refused(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    (run / "best" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="model.safetensors: not a readable safetensors file"):
        MAF.from_pretrained(run)
    other = MAF(MAFConfig.tiny(scheme="bioes", hidden_size=48))
    other.save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", run / "best" / "model.safetensors")
    with pytest.raises(DataError, match=r"best: not weights of the model its config.json describes: .*another shape"):
        MAF.from_pretrained(run)


def test_the_run_records_absolute_data_paths_and_keeps_its_tokenizer(trained):
    record = RunDirectory(trained / "run").record
    assert record["features"] == str(trained / "store.h5") and record["text_dir"] == str(trained / "text")
    assert record["tokenizer"]["name_or_path"] == str(trained / "tok")  # tokenized with "tok": made absolute
    assert (trained / "run" / "tokenizer" / "tokenizer.json").is_file()


def test_a_run_is_used_from_another_working_directory(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = str(trained / "run")
    done = CliRunner().invoke(maf, ["evaluate", run, "--out", "preds"])
    assert done.exit_code == 0, done.output
    own = trained / "run" / "predictions" / "test.conll"
    assert (tmp_path / "preds" / "test.conll").read_bytes() == own.read_bytes()
    done = CliRunner().invoke(maf, ["report", run, "--out", "figures"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "figures" / "cases.png").is_file()
    predictor = MAFPredictor.from_pretrained(run)  # the tokenizer "tok" is not here: the run's copy is used
    tweets = [json.loads(line) for line in (trained / "run" / "predictions" / "test.jsonl").read_text().splitlines()]
    out = predictor.predict([{"id": t["id"], "words": t["words"]} for t in tweets[:5]],
                            features=trained / "store.h5")
    assert [o["tags"] for o in out] == [t["predicted"] for t in tweets[:5]]


def test_a_moved_run_says_where_its_data_went_and_takes_the_new_place(trained, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(trained, moved)
    shutil.move(trained / "run", tmp_path / "run-kept")  # the original run and data are gone from their places
    shutil.move(trained / "store.h5", tmp_path / "store-kept.h5")
    shutil.move(trained / "tok", tmp_path / "tok-kept")  # nor the tokenizer the text was cut with
    try:
        run = str(moved / "run")
        done = CliRunner().invoke(maf, ["evaluate", run])
        assert done.exit_code == 1 and "Traceback" not in done.output
        assert "store.h5: the store" in done.output and "is not there any more; pass --features" in done.output
        done = CliRunner().invoke(maf, ["evaluate", run, "--features", str(moved / "store.h5"),
                                        "--text", str(moved / "text"), "--out", str(tmp_path / "p")])
        assert done.exit_code == 0, done.output
        done = CliRunner().invoke(maf, ["report", run, "--out", str(tmp_path / "fig"),
                                        "--features", str(moved / "store.h5"), "--text", str(moved / "text")])
        assert done.exit_code == 0, done.output
        shutil.rmtree(moved / "tok")  # neither the tokenizer it was cut with nor the old run is where it was
        tweets = [json.loads(x) for x in (moved / "run" / "predictions" / "test.jsonl").read_text().splitlines()]
        out = MAFPredictor.from_pretrained(run).predict([{"id": t["id"], "words": t["words"]} for t in tweets[:5]],
                                                         features=moved / "store.h5")
        assert [o["tags"] for o in out] == [t["predicted"] for t in tweets[:5]]
    finally:
        shutil.move(tmp_path / "run-kept", trained / "run")
        shutil.move(tmp_path / "store-kept.h5", trained / "store.h5")
        shutil.move(tmp_path / "tok-kept", trained / "tok")


def test_maf_evaluate_takes_a_batch_size_that_changes_no_tag(trained, tmp_path):
    """--batch-size (default: the run's own evaluation batch) changes how tweets are grouped, never their tags."""
    run = trained / "run"
    for name, extra in (("own", []), ("five", ["--batch-size", "5"])):
        done = CliRunner().invoke(maf, ["evaluate", str(run), "--out", str(tmp_path / name), *extra])
        assert done.exit_code == 0, done.output
    assert (tmp_path / "own" / "test.conll").read_bytes() == (tmp_path / "five" / "test.conll").read_bytes()
    assert json.loads((run / "config.json").read_text())["train"]["eval_batch_size"] == 64
