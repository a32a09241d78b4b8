from __future__ import annotations

import pytest
from helpers import twitter_style_tweets
from transformers import AutoTokenizer

from pipeline.conll import write_conll
from pipeline.errors import DataError
from pipeline.vocab import build_vocab


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def test_autotokenizer_loads_a_bert_fast_tokenizer(tokenizer):
    assert tokenizer.is_fast
    assert "Bert" in type(tokenizer).__name__
    assert 100 < len(tokenizer) <= 600


def test_vocabulary_starts_with_the_special_tokens(tokenizer_dir):
    assert (tokenizer_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()[:5] == [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_encoding_is_wrapped_in_cls_and_sep(tokenizer):
    encoded = tokenizer("Flying to London tomorrow")
    assert encoded["input_ids"][0] == tokenizer.cls_token_id and encoded["input_ids"][-1] == tokenizer.sep_token_id


def test_corpus_words_are_in_the_vocabulary(tokenizer):
    assert tokenizer.unk_token_id not in tokenizer("Flying to London tomorrow")["input_ids"]


def test_cased_by_default(tokenizer):
    assert tokenizer.tokenize("London") != tokenizer.tokenize("london")


def test_lowercase_option(lowercase_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(lowercase_tokenizer_dir))
    assert tokenizer.tokenize("LONDON") == tokenizer.tokenize("london")


def test_refuses_to_overwrite(sample_dir, tokenizer_dir):
    before = (tokenizer_dir / "vocab.txt").read_bytes()
    with pytest.raises(DataError, match="exists and is not empty; pass --overwrite"):
        build_vocab(sample_dir, tokenizer_dir, vocab_size=300)
    assert (tokenizer_dir / "vocab.txt").read_bytes() == before


def test_needs_a_corpus(tmp_path):
    with pytest.raises(DataError, match="no split file found"):
        build_vocab(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_a_vocabulary_too_small_for_the_special_tokens(sample_dir, tmp_path):
    with pytest.raises(DataError, match="too small"):
        build_vocab(sample_dir, tmp_path / "out", vocab_size=3)
    assert not (tmp_path / "out").exists()


def test_overwrite_replaces(sample_dir, tmp_path):
    out = tmp_path / "tok"
    build_vocab(sample_dir, out, vocab_size=300)
    build_vocab(sample_dir, out, vocab_size=500, overwrite=True)
    assert len(AutoTokenizer.from_pretrained(str(out))) > 300
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]  # no temporary directory left behind


def test_same_corpus_gives_the_same_vocabulary(tmp_path):
    """Rare t.co codes make many merge ties: the vocabulary must still not change between runs."""
    write_conll(twitter_style_tweets(1000, seed=4), tmp_path / "data" / "train.txt")
    built = []
    for i in range(4):
        build_vocab(tmp_path / "data", tmp_path / f"tok{i}", vocab_size=2000)
        built.append((tmp_path / f"tok{i}" / "vocab.txt").read_bytes())
    assert len(set(built)) == 1
