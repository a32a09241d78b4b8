"""A newcomer's first run: the image folder given wrong is said loudly, training says what the
model saw of the images, and a file that is not weights is refused in one line."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import write_text
from PIL import Image

from cli.maf import main as maf
from cli.pipe import main as pipe
from maf_core.config import MAFConfig
from maf_core.images_seen import no_image_line, no_image_note, reads_images, start_warning
from maf_core.models.umt import umt_settings
from pipeline.errors import DataError
from pipeline.extract import ExtractConfig, extract_images, ids_from_corpus, summary_text
from pipeline.torch_files import load_state

TINY = dict(backbone="resnet18", weights="none", workers=0, batch_size=4, shard_size=8)
IDS = ["a1", "a2", "a3", "a4", "a5", "a6"]


def _images(folder: Path, ids: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id in ids:
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(folder / f"{image_id}.jpg")


def _corpus(folder: Path, ids: list[str]) -> Path:
    for split in ("train", "valid", "test"):
        write_text(folder / f"{split}.txt", "".join(f"IMGID:{i}\nRob\tB-PER\nsmiles\tO\n\n" for i in ids))
    return folder


# ---------------------------------------------------------------- extract-images: most images missing


def test_a_wrong_folder_with_the_images_in_a_subfolder_is_named_after_the_table(tmp_path):
    root = tmp_path / "data"
    _images(root / "twitter2015_images", IDS)
    _images(root / "other", IDS[:2])
    corpus = _corpus(tmp_path / "corpus", IDS)
    out = tmp_path / "store.h5"
    result = CliRunner().invoke(pipe, ["extract-images", str(root), "--ids-from", str(corpus), "--out", str(out),
                                       "--backbone", "resnet18", "--weights", "none", "--workers", "0"])
    assert result.exit_code == 0, result.output  # --missing record: the store is written
    assert out.is_file()
    text = result.output
    warning = text.index("WARNING: 6 of 6 image ids (100.0%) have no file in ")
    assert warning > text.index("missing            6")  # after the status table
    assert f"have no file in {root.resolve()} (tried {root.resolve() / 'a1.jpg'}," in text
    assert f"Its subfolder {(root / 'twitter2015_images').resolve()} holds 6 of them" in text
    assert "exit status 0" in text and "--missing fail" in text


def test_the_warning_without_a_subfolder_and_on_a_reused_store(tmp_path):
    folder = tmp_path / "images"
    _images(folder, IDS[:2])
    out = tmp_path / "store.h5"
    first = summary_text(extract_images(folder, out, ExtractConfig(**TINY), ids=IDS))
    again = summary_text(extract_images(folder, out, ExtractConfig(**TINY), ids=IDS))
    for text in (first, again):
        assert "WARNING: 4 of 6 image ids (66.7%) have no file in " in text
        assert f"(tried {folder.resolve() / 'a3.jpg'}," in text and "subfolder" not in text


@pytest.mark.parametrize("present", [3, 6])
def test_no_warning_when_at_most_half_the_images_are_missing(tmp_path, present):
    folder = tmp_path / "images"
    _images(folder, IDS[:present])
    summary = extract_images(folder, tmp_path / "store.h5", ExtractConfig(**TINY), ids=IDS)
    assert "looked_in" not in summary and "WARNING" not in summary_text(summary)


# ---------------------------------------------------------------- files that are not weights


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def _junk(path: Path, kind: str) -> Path:
    """A file with a weights name that is not weights."""
    if kind == "html":
        path.write_text("<html><body>404 Not Found</body></html>\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "cut":
        torch.save({"w": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "list":
        torch.save([torch.zeros(2)], path)
    elif kind == "code":
        torch.save({"w": _RunsCode()}, path)
    return path


JUNK = [("html", r"not a PyTorch checkpoint \(a text file beginning '<html><body>404 Not Found"),
        ("empty", r"not a PyTorch checkpoint \(an empty file\)"),
        ("cut", r"not a PyTorch checkpoint \(a zip archive torch cannot read, or a cut download\)"),
        ("list", r"not a state dict \(it holds a list, not a dict of tensors\)"),
        ("code", r"not a state dict of plain tensors: unpickling it would import \w+\.system; refused before it runs")]


@pytest.mark.parametrize("kind, message", JUNK)
def test_a_file_that_is_not_weights_is_one_line_without_torch_s_advice(tmp_path, kind, message):
    path = _junk(tmp_path / "junk.pth", kind)
    with pytest.raises(DataError, match=rf"^{path}: {message}") as raised:
        load_state(path)
    assert "\n" not in str(raised.value) and "weights_only" not in str(raised.value)


@pytest.mark.parametrize("kind", ["html", "empty"])
def test_extract_images_weights_junk_is_one_line(tmp_path, kind):
    folder = tmp_path / "images"
    _images(folder, IDS[:2])
    path = _junk(tmp_path / "junk.pth", kind)
    result = CliRunner().invoke(pipe, ["extract-images", str(folder), "--out", str(tmp_path / "store.h5"),
                                       "--backbone", "resnet18", "--weights", str(path), "--workers", "0"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith(f"Error: {path}: not a PyTorch checkpoint")
    assert "weights_only" not in result.output
    assert not (tmp_path / "store.h5").exists()


def test_weights_of_no_resnet_or_of_another_resnet_are_refused_in_one_line(tmp_path):
    folder = tmp_path / "images"
    _images(folder, IDS[:2])
    for state, message in (({"step": torch.zeros(1)}, r"not a state dict of a ResNet \(none of its 1 keys"),
                           ({"conv1.weight": 3}, r"not a state dict of tensors \(body.0.weight holds a int\)")):
        torch.save(state, tmp_path / "w.pth")
        with pytest.raises(DataError, match=message):
            extract_images(folder, tmp_path / "s.h5", ExtractConfig(**dict(TINY, weights=str(tmp_path / "w.pth"))))


# ---------------------------------------------------------------- training on a store with no readable image


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def blind(sample_dir, sample_text, tmp_path_factory) -> dict:
    """A store of the sample corpus's ids extracted from a folder without images (every one
    missing), and a tiny MAF and UMT trained on it for one epoch through `maf train`, with what
    each printed and logged."""
    root = tmp_path_factory.mktemp("blind")
    (root / "no-images").mkdir()
    store = root / "store.h5"
    extract_images(root / "no-images", store, ExtractConfig(**TINY), ids=ids_from_corpus(sample_dir))
    out = {"store": store, "text": sample_text}
    for model in ("maf", "umt"):
        records = _Records()
        logging.getLogger("maf_core").addHandler(records)
        try:
            result = CliRunner().invoke(maf, ["train", "--features", str(store), "--text", str(sample_text), "--out",
                                              str(root / model), "--model", model, "--bert-config", "tiny",
                                              "--epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--device", "cpu",
                                              "--no-tensorboard"])
        finally:
            logging.getLogger("maf_core").removeHandler(records)
        assert result.exit_code == 0, result.output
        out[model] = {"run": root / model, "output": result.output, "warnings": records.messages}
    return out


@pytest.mark.parametrize("model", ["maf", "umt"])
def test_a_model_that_saw_no_image_is_warned_at_the_start_noted_at_the_end_and_carded(blind, model):
    run = blind[model]
    assert any(m.startswith("none of the 90 train tweets (0%) has a readable image in the store: the model will see "
                            "no image and train as a text-only model") for m in run["warnings"]), run["warnings"]
    note = ("the model saw no image: none of the 90 train tweets had a readable image in the store, so it is in "
            "effect a text-only model")
    last = run["output"].strip().splitlines()[-1]
    assert last.startswith(f"note: {note}")  # the end-of-run note, after the scores
    report = json.loads((run["run"] / "report.json").read_text())
    assert report["images"] == {split: {"tweets": n, "readable": 0, "share": 0.0}
                                for split, n in (("train", 90), ("valid", 30), ("test", 30))}
    assert report["notes"][0].startswith(note)
    card = (run["run"] / "best" / "README.md").read_text()
    assert "| readable images | train 0 of 90 (0.0%), valid 0 of 30 (0.0%), test 0 of 30 (0.0%) |" in card
    assert f"**Note:** {note}" in card


def test_seeds_that_saw_no_image_say_so_in_the_summary_and_after_the_table(blind, tmp_path):
    result = CliRunner().invoke(maf, ["train", "--features", str(blind["store"]), "--text", str(blind["text"]),
                                      "--out", str(tmp_path / "seeds"), "--seeds", "1,2", "--bert-config", "tiny",
                                      "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    note = ("the model saw no image: none of the 90 train tweets had a readable image in the store, so it is in "
            "effect a text-only model")
    assert result.output.strip().splitlines()[-1].startswith(f"note: {note}")  # both seeds: one note, unprefixed
    summary = json.loads((tmp_path / "seeds" / "summary.json").read_text())
    assert len(summary["notes"]) == 1 and summary["notes"][0].startswith(note)


def test_evaluate_and_predict_on_a_split_with_no_readable_image_say_so_in_one_line(blind, tmp_path, caplog):
    run = blind["maf"]["run"]
    with caplog.at_level(logging.WARNING, logger="maf_core.inference"):
        done = CliRunner().invoke(maf, ["evaluate", str(run), "--split", "valid", "--out", str(tmp_path / "eval")])
    assert done.exit_code == 0, done.output
    said = [r.getMessage() for r in caplog.records if "readable image" in r.getMessage()]
    assert said == [f"the valid split of {blind['text']} (store {blind['store']}): none of the 30 tweets has a "
                    "readable image; the model tagged them from the text alone"]
    first = json.loads((tmp_path / "eval" / "valid.jsonl").read_text().splitlines()[0])["id"]
    tweets = write_text(tmp_path / "new.jsonl", "".join(json.dumps({"id": f"t{n}", "text": "Rob at the beach",
                                                                    "image": first}) + "\n" for n in range(2)))
    done = CliRunner().invoke(maf, ["predict", str(run), "--input", str(tweets), "--features", str(blind["store"]),
                                    "--out", str(tmp_path / "pred.jsonl")])
    assert done.exit_code == 0, done.output
    assert done.output.strip().splitlines()[-1] == (f"note: {tweets}: none of the 2 tweets has a readable image; "
                                                    "the model tagged them from the text alone")


def test_which_runs_are_warned_is_decided_by_the_config_and_the_share():
    maf_config, umt_config = MAFConfig.tiny(), MAFConfig.tiny(**umt_settings("umt"), tags=["O", "B-PER", "I-PER"])
    text_only = MAFConfig.tiny(text_only=True)
    assert reads_images(maf_config) and reads_images(umt_config) and not reads_images(text_only)

    def seen(readable: int, tweets: int = 36) -> dict:
        return {"train": {"tweets": tweets, "readable": readable, "share": round(readable / tweets, 4)}}

    assert start_warning(maf_config, seen(10)).startswith("only 10 of 36 (27.8%) train tweets have a readable image")
    assert start_warning(umt_config, seen(17)) is not None and no_image_note(umt_config, seen(17)) is None
    assert start_warning(maf_config, seen(18)) is None  # half is enough
    assert start_warning(text_only, seen(0)) is None and no_image_note(text_only, seen(0)) is None
    assert start_warning(maf_config, None) is None and no_image_note(maf_config, None) is None  # images read online
    assert no_image_line(text_only, "x", 5, 0) is None and no_image_line(maf_config, "x", 5, 1) is None


# ---------------------------------------------------------------- a run's checkpoints that are not weights


def test_resume_from_a_last_pt_that_is_not_weights_is_one_line(blind, tmp_path):
    run = Path(shutil.copytree(blind["maf"]["run"], tmp_path / "run"))
    _junk(run / "last.pt", "html")
    done = CliRunner().invoke(maf, ["train", "--features", str(blind["store"]), "--text", str(blind["text"]), "--out",
                                    str(run), "--bert-config", "tiny", "--epochs", "2", "--batch-size", "16", "--lr",
                                    "1e-3", "--device", "cpu", "--no-tensorboard", "--resume"])
    assert done.exit_code == 1
    assert done.output.strip().splitlines() == [f"Error: {run / 'last.pt'}: not a PyTorch checkpoint (a text file "
                                                "beginning '<html><body>404 Not Found</body></html>')"]


@pytest.mark.parametrize("kind", ["empty", "list"])
def test_an_older_run_s_model_pt_that_is_not_weights_is_one_line(blind, tmp_path, kind):
    run = Path(shutil.copytree(blind["umt"]["run"], tmp_path / "run"))
    (run / "best" / "model.safetensors").unlink()
    _junk(run / "best" / "model.pt", kind)
    done = CliRunner().invoke(maf, ["evaluate", str(run)])
    assert done.exit_code == 1 and len(done.output.strip().splitlines()) == 1, done.output
    assert done.output.startswith(f"Error: {run / 'best' / 'model.pt'}: not a ")
    assert "weights_only" not in done.output


def test_a_run_with_images_records_their_share_and_no_note(sample_store, sample_text):
    from maf_core.data import load_split
    from maf_core.run import _card_images
    from maf_core.train import images_record
    from pipeline.store import FeatureStore

    store = FeatureStore(sample_store)
    splits = {name: load_split(sample_text, name) for name in ("train", "valid", "test")}
    record = images_record(MAFConfig.tiny(), splits, store)
    ok = {i for i, s in zip(store.image_ids, store.status) if s == 0}
    assert set(record) == {"images"}  # no note
    for name, split in splits.items():
        readable = sum(i in ok for i in split.image_ids)
        assert readable > len(split) / 2
        assert record["images"][name] == {"tweets": len(split), "readable": readable,
                                          "share": round(readable / len(split), 4)}
    rows, notes = _card_images(record)
    assert rows[0][0] == "readable images" and rows[0][1].startswith(f"train {record['images']['train']['readable']} "
                                                                     "of 90 (") and notes == []
