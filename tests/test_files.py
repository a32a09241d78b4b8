from __future__ import annotations

import pytest

from pipeline.errors import DataError
from pipeline.files import atomic_directory, atomic_output, refuse_non_empty


def test_atomic_output_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "meta.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as handle:
            handle.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["meta.json"]
    with atomic_output(target) as handle:
        handle.write("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["meta.json"]


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(target) as tmp:
            (tmp / "a").write_text("half")
            raise KeyboardInterrupt
    assert (target / "a").read_text() == "old"
    with atomic_directory(target) as tmp:
        (tmp / "b").write_text("new")
    assert [p.name for p in target.iterdir()] == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_refuse_non_empty(tmp_path):
    refuse_non_empty(tmp_path / "absent", overwrite=False)
    refuse_non_empty(tmp_path, overwrite=False)  # empty
    (tmp_path / "x").write_text("x")
    with pytest.raises(DataError, match="exists and is not empty; pass --overwrite"):
        refuse_non_empty(tmp_path, overwrite=False)
    refuse_non_empty(tmp_path, overwrite=True)
    with pytest.raises(DataError, match="exists and is not a directory"):
        refuse_non_empty(tmp_path / "x", overwrite=True)
