"""Shared fixtures: a small sample corpus and a WordPiece tokenizer trained on it, built once."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.sample import make_sample
from pipeline.vocab import build_vocab


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "sample"
    make_sample(out, tweets=150, seed=3)
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(sample_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer") / "tok"
    build_vocab(sample_dir, out, vocab_size=600)
    return out


def write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path
