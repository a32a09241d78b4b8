"""A newcomer's first run: the image folder given wrong is said loudly, training says what the
model saw of the images, and a file that is not weights is refused in one line."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import write_text
from PIL import Image

from cli.pipe import main as pipe
from pipeline.errors import DataError
from pipeline.extract import ExtractConfig, extract_images, summary_text
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
