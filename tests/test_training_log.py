"""What a run tells while it trains: the start-of-run summary, progress lines where stderr is
not a terminal, and TensorBoard event files with one point per step or per epoch."""
from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import yaml
from click.testing import CliRunner

from cli.maf import main as maf
from maf_core.config import MAFConfig, TrainConfig
from maf_core.train import epoch_batches, train
from pipeline.progress import Progress
from pipeline.store import FeatureStore

CONFIG = TrainConfig(epochs=2, batch_size=16, lr=1e-3, seed=3, device="cpu", log_every=0.0)
GROUPS = ("bert", "bert_no_decay", "heads", "heads_no_decay")


@pytest.fixture(scope="module")
def logged_run(sample_text, sample_store, tmp_path_factory) -> dict:
    """A tiny MAF trained for two epochs, its log lines captured."""
    run = tmp_path_factory.mktemp("logged") / "run"
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        train(FeatureStore(sample_store), sample_text, run, MAFConfig.tiny(scheme="bioes"), CONFIG)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    from maf_core.data import load_split

    steps = len(epoch_batches(load_split(sample_text, "train"), CONFIG, 1))
    return {"run": run, "log": [r.getMessage() for r in records], "steps_per_epoch": steps}


def _interrupted_run(store, text, run, config: TrainConfig = CONFIG) -> None:
    """A tiny run stopped after its first epoch, as Ctrl-C would: last.pt holds epoch 1."""
    def stop(epoch):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(FeatureStore(store), text, run, MAFConfig.tiny(scheme="bioes"), config, on_epoch_end=stop)


def _events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return events


def test_the_run_starts_with_a_summary(logged_run):
    summary = next(line for line in logged_run["log"] if line.startswith("starting a run:"))
    assert "M trainable parameters (bert " in summary and "interaction " in summary and "matching " in summary
    assert "train: 90 tweets, " in summary and "with a readable image" in summary and "without" in summary
    assert "device cpu, fp32; global batch 16" in summary and f"{logged_run['steps_per_epoch']} steps" in summary
    assert f"writing to {logged_run['run']}" in summary


def test_progress_lines_are_logged_when_stderr_is_not_a_terminal(logged_run):
    steps = logged_run["steps_per_epoch"]
    lines = [line for line in logged_run["log"] if line.startswith("epoch 1/2: ")]
    assert len(lines) == steps  # log_every 0: a line per step
    assert lines[-1].startswith(f"epoch 1/2: {steps}/{steps} steps, ") and ", loss " in lines[-1]
    assert ", ETA " in lines[0]
    assert any(line.startswith("predict valid: ") for line in logged_run["log"])


def test_scalars_have_a_point_per_step_or_epoch(logged_run):
    events = _events(logged_run["run"])
    tags = set(events.Tags()["scalars"])
    per_step = {"loss/total", "loss/ner", "loss/ca", "loss/cm", *(f"lr/{g}" for g in GROUPS)}
    assert per_step | {"dev/precision", "dev/recall", "dev/f1"} == tags
    total = 2 * logged_run["steps_per_epoch"]
    for tag in per_step:
        assert [e.step for e in events.Scalars(tag)] == list(range(1, total + 1)), tag
    assert [e.step for e in events.Scalars("dev/f1")] == [1, 2]


def test_logged_values_are_the_run_s_own(logged_run):
    import json

    events = _events(logged_run["run"])
    metrics = [json.loads(line) for line in (logged_run["run"] / "metrics.jsonl").read_text().splitlines()]
    assert [round(e.value, 4) for e in events.Scalars("dev/f1")] == [m["dev_f1"] for m in metrics]
    steps = logged_run["steps_per_epoch"]
    first_epoch = [e.value for e in events.Scalars("loss/ner")][:steps]
    assert sum(first_epoch) / steps == pytest.approx(metrics[0]["loss_ner"], abs=1e-4)
    warmup = [e.value for e in events.Scalars("lr/heads")]
    assert warmup[0] < warmup[1]  # the warm-up: the learning rate rises over the first steps


def test_histograms_of_p_per_relation_per_epoch(logged_run):
    events = _events(logged_run["run"])
    assert set(events.Tags()["histograms"]) == {"p/dev_matched", "p/dev_unrelated"}
    for tag in ("p/dev_matched", "p/dev_unrelated"):
        shown = events.Histograms(tag)
        assert [h.step for h in shown] == [1, 2]
        assert shown[0].histogram_value.num > 0
        assert 0.0 <= shown[0].histogram_value.min <= shown[0].histogram_value.max <= 1.0


def test_text_only_runs_log_no_image_losses_or_p(sample_text, sample_store, tmp_path):
    run = tmp_path / "text-only"
    train(FeatureStore(sample_store), sample_text, run, MAFConfig.tiny(scheme="bioes", text_only=True),
          replace(CONFIG, epochs=1))
    events = _events(run)
    assert {t for t in events.Tags()["scalars"] if t.startswith("loss/")} == {"loss/total", "loss/ner"}
    assert events.Tags()["histograms"] == []


def test_tensorboard_off_from_the_yaml_config(sample_text, sample_store, tmp_path):
    options = tmp_path / "train.yaml"
    options.write_text(yaml.safe_dump({"features": str(sample_store), "text": str(sample_text), "bert-config": "tiny",
                                       "epochs": 1, "batch-size": 32, "tensorboard": False}))
    done = CliRunner().invoke(maf, ["train", "--config", str(options), "--out", str(tmp_path / "run"),
                                    "--device", "cpu"])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "run" / "best").is_dir() and not (tmp_path / "run" / "tb").exists()


def test_a_resumed_run_may_switch_tensorboard_and_progress_settings(sample_text, sample_store, tmp_path):
    run = tmp_path / "run"
    config = replace(CONFIG, epochs=2, tensorboard=False)
    _interrupted_run(sample_store, sample_text, run, config)
    train(FeatureStore(sample_store), sample_text, run, MAFConfig.tiny(scheme="bioes"),
          replace(config, tensorboard=True, log_every=5.0), resume=True)
    assert [e.step for e in _events(run).Scalars("dev/f1")] == [2]


def test_progress_without_a_terminal_logs_rate_eta_and_figures(caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        with Progress(4, "work", "items", every=0.0) as bar:
            for _ in range(4):
                bar.update(1, lambda: {"loss": 0.5})
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and lines[0].startswith("work: 1/4 items, ") and ", ETA " in lines[0]
    assert lines[-1].startswith("work: 4/4 items, ") and "ETA" not in lines[-1] and lines[-1].endswith("loss 0.500")


def test_progress_of_other_processes_is_silent(caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        with Progress(2, "work", "items", every=0.0, enabled=False) as bar:
            bar.update(2)
    assert caplog.records == []


def test_short_work_stays_silent_unless_asked_for_a_final_line(caplog):
    with caplog.at_level(logging.INFO, logger="pipeline.progress"):
        with Progress(2, "short", "items", every=60.0, final=False) as bar:
            bar.update(2)
        with Progress(2, "counted", "items", every=60.0) as bar:
            bar.update(2)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["counted"]


def test_a_resumed_run_continues_its_curves_without_a_gap_or_a_repeat(sample_text, sample_store, tmp_path):
    run = tmp_path / "run"
    _interrupted_run(sample_store, sample_text, run)
    train(FeatureStore(sample_store), sample_text, run, MAFConfig.tiny(scheme="bioes"), CONFIG, resume=True)
    steps = [e.step for e in _events(run).Scalars("loss/total")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) % 2 == 0


def test_last_pt_of_another_model_is_refused_in_one_line(sample_text, sample_store, tmp_path):
    import torch

    from maf_core.model import MAF
    from pipeline.errors import DataError

    run = tmp_path / "run"
    _interrupted_run(sample_store, sample_text, run)
    state = torch.load(run / "last.pt", weights_only=True)
    state["model"] = MAF(MAFConfig.tiny(scheme="bioes", hidden_size=48, text_only=True)).state_dict()
    torch.save(state, run / "last.pt")
    with pytest.raises(DataError, match=r"last.pt: not weights of the model its config.json describes"):
        train(FeatureStore(sample_store), sample_text, run, MAFConfig.tiny(scheme="bioes"), CONFIG, resume=True)
