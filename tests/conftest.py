"""Shared fixtures, each built once a session: a small sample corpus and WordPiece tokenizers
trained on it. Tests read them and never write into them; a test that changes a corpus or a
tokenizer builds its own in `tmp_path`. Helper functions live in `helpers.py`."""
from __future__ import annotations

import os
from pathlib import Path

# Before torch loads OpenMP: idle intra-op threads sleep instead of spinning. The tests' models are
# tiny, and with spinning threads a tiny training ran 10 times slower on a 2-core machine busy with
# other work (or with a second pytest-xdist worker). Subprocesses the tests start inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
from helpers import SERVE_BASE

from pipeline.sample import make_sample
from pipeline.vocab import build_vocab


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """The sample corpus: 150 tweets (90/30/30), seed 3, with images and annotations.jsonl."""
    out = tmp_path_factory.mktemp("corpus") / "sample"
    make_sample(out, tweets=150, seed=3)
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(sample_dir, tmp_path_factory) -> Path:
    """A cased WordPiece vocabulary of 600 trained on `sample_dir`."""
    out = tmp_path_factory.mktemp("tokenizer") / "tok"
    build_vocab(sample_dir, out, vocab_size=600)
    return out


@pytest.fixture(scope="session")
def lowercase_tokenizer_dir(sample_dir, tmp_path_factory) -> Path:
    """An uncased WordPiece vocabulary of 400 trained on `sample_dir`."""
    out = tmp_path_factory.mktemp("tokenizer") / "lower"
    build_vocab(sample_dir, out, vocab_size=400, lowercase=True)
    return out


@pytest.fixture(scope="session")
def other_tokenizer_dir(sample_dir, tmp_path_factory) -> Path:
    """A second cased vocabulary (300) of `sample_dir`: same corpus, other vocab sha256 than `tokenizer_dir`."""
    out = tmp_path_factory.mktemp("tokenizer") / "othertok"
    build_vocab(sample_dir, out, vocab_size=300)
    return out


@pytest.fixture(scope="session")
def sample_extraction(sample_dir, tmp_path_factory) -> dict:
    """Features of every image of `sample_dir` (resnet18, random weights, in-process): the store
    and the summary `extract_images` returned."""
    from pipeline.extract import ExtractConfig, extract_images, ids_from_corpus

    out = tmp_path_factory.mktemp("store") / "store.h5"
    summary = extract_images(sample_dir / "images", out, ExtractConfig(backbone="resnet18", weights="none", workers=0,
                                                                       shard_size=64), ids=ids_from_corpus(sample_dir))
    return {"store": out, "summary": summary}


@pytest.fixture(scope="session")
def sample_store(sample_extraction) -> Path:
    """The store of `sample_extraction`."""
    return sample_extraction["store"]


@pytest.fixture(scope="session")
def sample_text(sample_dir, tokenizer_dir, tmp_path_factory) -> Path:
    """`sample_dir` tokenized with `tokenizer_dir`, BIOES, 64 pieces at most."""
    from pipeline.tokenization import tokenize_corpus

    out = tmp_path_factory.mktemp("text") / "text"
    tokenize_corpus(sample_dir, str(tokenizer_dir), out, max_length=64)
    return out


@pytest.fixture(scope="session")
def served_runs(sample_text, sample_store, tmp_path_factory) -> dict:
    """Two tiny runs on the sample corpus for `maf serve`: MAF and the text-only baseline (3 epochs,
    so that some test tweets get entities). Tests read them; one that changes a run works on a copy."""
    from maf_core.config import MAFConfig, TrainConfig
    from maf_core.train import train
    from pipeline.store import FeatureStore

    root = tmp_path_factory.mktemp("served")
    config = TrainConfig(epochs=3, batch_size=16, lr=1e-3, seed=3, device="cpu", tensorboard=False)
    for name, text_only in (("maf", False), ("text-only", True)):
        train(FeatureStore(sample_store), sample_text, root / name,
              MAFConfig.tiny(scheme="bioes", text_only=text_only), config)
    return {"maf": root / "maf", "text-only": root / "text-only"}


# `maf serve` on the MAF run above: the app (a test module may define its own `app`) and a client that
# talks to it as the page does, at SERVE_BASE


@pytest.fixture(scope="module")
def app(served_runs):
    from maf_core.serve import build

    return build(served_runs["maf"], device="cpu")


@pytest.fixture(scope="module")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, base_url=SERVE_BASE) as client:
        yield client
