from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_text

from pipeline import tokenization
from pipeline.conll import Tweet, read_conll, write_conll
from pipeline.errors import DataError
from pipeline.sample import twitter_style_tweets
from pipeline.schemes import bio_to_bioes, tag_list
from pipeline.tokenization import load_tokenizer, read_meta, read_split, tokenize_corpus, tokenize_tweets
from pipeline.vocab import build_vocab


def assert_lossless(data_dir, text_dir, scheme="bioes"):
    """Every tweet comes back with exactly its source words and labels, in order."""
    meta = read_meta(text_dir)
    tags = meta["tags"]
    for split in meta["splits"]:
        table = read_split(text_dir, split).to_pylist()
        source = read_conll(meta["splits"][split]["source"])
        assert Path(meta["splits"][split]["source"]).parent == Path(data_dir).resolve()
        assert len(table) == len(source) == meta["splits"][split]["tweets"]
        for row, tweet in zip(table, source):
            assert row["image_id"] == tweet.image_id
            assert row["words"] == tweet.words
            assert row["labels"] == tweet.labels
            assert len(row["word_starts"]) == len(row["tag_ids"]) == len(tweet.words)
            expected = bio_to_bioes(tweet.labels) if scheme == "bioes" else tweet.labels
            assert [tags[i] for i in row["tag_ids"]] == expected
            assert row["input_ids"][0] == meta["tokenizer"]["cls_id"]
            assert row["input_ids"][-1] == meta["tokenizer"]["sep_id"]
            assert len(row["input_ids"]) <= meta["max_length"]


def test_sample_corpus_round_trips(sample_dir, tokenizer_dir, tmp_path):
    meta = tokenize_corpus(sample_dir, str(tokenizer_dir), tmp_path / "text")
    assert set(meta["splits"]) == {"train", "valid", "test"}
    assert meta["scheme"] == "bioes" and meta["tags"] == tag_list("bioes")
    assert meta["tokenizer"]["vocab_sha256"] == tokenization.vocab_sha256(load_tokenizer(str(tokenizer_dir)))
    assert meta["tokenizer"]["lowercase"] is False
    assert_lossless(sample_dir, tmp_path / "text")


def test_word_starts_point_at_each_words_first_piece(sample_dir, tokenizer_dir, tmp_path):
    tokenize_corpus(sample_dir, str(tokenizer_dir), tmp_path / "text")
    tokenizer = load_tokenizer(str(tokenizer_dir))
    for row in read_split(tmp_path / "text", "valid").to_pylist()[:30]:
        for word, start in zip(row["words"], row["word_starts"]):
            first = tokenizer(word, add_special_tokens=False)["input_ids"][0]
            assert row["input_ids"][start] == first


def hard_corpus(tmp_path, n=40, seed=5):
    data = tmp_path / "hard"
    tweets = twitter_style_tweets(3 * n, seed=seed)
    for i, split in enumerate(["train", "dev", "test"]):  # dev.txt names the valid split
        write_conll(tweets[i * n:(i + 1) * n], data / f"{split}.txt")
    return data


def test_hard_characters_lose_nothing(tmp_path, tokenizer_dir):
    data = hard_corpus(tmp_path)
    text = "".join((data / f"{s}.txt").read_text(encoding="utf-8") for s in ("train", "dev", "test"))
    for needle in ("\u200b", "\xad", "👨\u200d👩", "https://", "#", "\x7f"):
        assert needle in text
    meta = tokenize_corpus(data, str(tokenizer_dir), tmp_path / "text", max_length=64)
    assert meta["splits"]["valid"]["source"].endswith("dev.txt")
    assert meta["splits"]["train"]["no_piece_words"] > 0
    assert_lossless(data, tmp_path / "text")


@pytest.mark.parametrize("word", ["\u200b", "\xad", "\ufeff", "\x7f", "\x01", "\xa0", "\u3000", "\u200f", "\u2028"])
def test_word_without_any_piece_becomes_unk_and_is_listed(tokenizer_dir, word):
    tokenizer = load_tokenizer(str(tokenizer_dir))
    tweet = Tweet("9", ["Look", word, "at", "Rob"], ["O", "O", "O", "B-PER"], line=4)
    result = tokenize_tweets([tweet], tokenizer, split="test")
    row = result.table.to_pylist()[0]
    assert row["words"] == tweet.words
    starts = row["word_starts"]
    assert row["input_ids"][starts[1]] == tokenizer.unk_token_id
    assert starts == sorted(starts) and len(set(starts)) == 4  # every word has its own position
    assert result.no_piece_words == [{"split": "test", "image_id": "9", "line": 4, "index": 1, "word": word}]
    assert result.stats["no_piece_words"] == 1


def test_lowercasing_tokenizer_strips_lone_marks_to_nothing(sample_dir, tmp_path):
    # Twitter-2017 has a lone variation selector (U+FE0F) as a token after '☀'; an uncased
    # BERT strips marks, so such a word gives no piece at all.
    build_vocab(sample_dir, tmp_path / "lower", vocab_size=400, lowercase=True)
    tokenizer = load_tokenizer(str(tmp_path / "lower"))
    tweet = Tweet("16_05_19_911", ["vodka", "☀", "\ufe0f", "\u0301"], ["O"] * 4)
    result = tokenize_tweets([tweet], tokenizer)
    assert [item["index"] for item in result.no_piece_words] == [2, 3]
    row = result.table.to_pylist()[0]
    assert [row["input_ids"][s] for s in row["word_starts"][2:]] == [tokenizer.unk_token_id] * 2


def test_truncation_is_counted_and_listed(tokenizer_dir):
    tokenizer = load_tokenizer(str(tokenizer_dir))
    words = [f"w{i}" for i in range(20)] + ["Rob"]
    labels = ["O"] * 20 + ["B-PER"]
    short = Tweet("1", ["hi"], ["O"])
    result = tokenize_tweets([Tweet("2", words, labels, line=7), short], tokenizer, max_length=12, split="train")
    long_row, short_row = result.table.to_pylist()
    assert len(long_row["input_ids"]) == 12 and long_row["input_ids"][-1] == tokenizer.sep_token_id
    kept = [s for s in long_row["word_starts"] if s >= 0]
    assert all(0 < s < 11 for s in kept)
    assert long_row["word_starts"][-1] == -1  # Rob lost its first piece
    assert long_row["words"] == words and long_row["labels"] == labels  # but is not dropped
    assert len(result.truncated) == 1 and result.truncated[0]["image_id"] == "2"
    assert result.truncated[0]["dropped_words"][-1] == "Rob"
    assert result.truncated[0]["line"] == 7
    assert result.stats["truncated_tweets"] == 1
    assert result.stats["truncated_words"] == len(result.truncated[0]["dropped_words"])
    assert short_row["word_starts"] == [1]


def test_one_batched_tokenizer_call_per_split(sample_dir, tokenizer_dir, tmp_path, monkeypatch):
    real = load_tokenizer(str(tokenizer_dir))
    calls = []

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def __len__(self):
            return len(real)

        def __call__(self, *args, **kwargs):
            calls.append(len(args[0]))
            return real(*args, **kwargs)

    monkeypatch.setattr(tokenization, "load_tokenizer", lambda name: Counting())
    meta = tokenize_corpus(sample_dir, str(tokenizer_dir), tmp_path / "text")
    assert calls == [meta["splits"][s]["tweets"] for s in ("train", "valid", "test")]


def test_bio_scheme_keeps_source_tags(tmp_path, tokenizer_dir):
    data = tmp_path / "d"
    write_text(data / "test.txt", "IMGID:1\nsee\tO\nRob\tI-OTHER\n\n")
    meta = tokenize_corpus(data, str(tokenizer_dir), tmp_path / "text", scheme="bio")
    assert list(meta["splits"]) == ["test"]
    row = read_split(tmp_path / "text", "test").to_pylist()[0]
    assert row["labels"] == ["O", "I-MISC"]
    assert [meta["tags"][i] for i in row["tag_ids"]] == ["O", "I-MISC"]
    assert meta["splits"]["test"]["entities"]["MISC"] == 1


def test_bad_corpus_writes_nothing_and_keeps_earlier_output(sample_dir, tokenizer_dir, tmp_path):
    out = tmp_path / "text"
    tokenize_corpus(sample_dir, str(tokenizer_dir), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad"
    write_text(bad / "train.txt", "IMGID:1\nfine\tO\n\n")
    write_text(bad / "test.txt", "IMGID:1\nbroken\tB-XYZ\n\n")
    with pytest.raises(DataError, match=r"test\.txt:2: unknown label 'B-XYZ'"):
        tokenize_corpus(bad, str(tokenizer_dir), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_unloadable_tokenizer_and_bad_options(sample_dir, tokenizer_dir, tmp_path):
    with pytest.raises(DataError, match="no-such-tokenizer: no such tokenizer directory"):
        tokenize_corpus(sample_dir, str(tmp_path / "no-such-tokenizer"), tmp_path / "text")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot load a tokenizer from '.*empty'"):
        tokenize_corpus(sample_dir, str(tmp_path / "empty"), tmp_path / "text")
    with pytest.raises(DataError, match="exceeds the tokenizer's limit of 512"):
        tokenize_corpus(sample_dir, str(tokenizer_dir), tmp_path / "text", max_length=1000)
    with pytest.raises(DataError, match="too small"):
        tokenize_corpus(sample_dir, str(tokenizer_dir), tmp_path / "text", max_length=2)
    assert not (tmp_path / "text").exists()


def test_readers_refuse_incomplete_output(tmp_path):
    with pytest.raises(DataError, match="meta.json: no such file"):
        read_meta(tmp_path)
    with pytest.raises(DataError, match=r"train\.arrow: no such file"):
        read_split(tmp_path, "train")
    (tmp_path / "train.arrow").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable Arrow IPC file"):
        read_split(tmp_path, "train")


@pytest.mark.slow
def test_twitter_sized_corpus_with_hard_characters_round_trips(tmp_path):
    """About 4,000 tweets a split, as Twitter-2015/2017, with a vocabulary of their own."""
    data = tmp_path / "twitter"
    tweets = twitter_style_tweets(12_000, seed=11)
    for i, split in enumerate(["train", "valid", "test"]):
        write_conll(tweets[i * 4000:(i + 1) * 4000], data / f"{split}.txt")
    build_vocab(data, tmp_path / "tok", vocab_size=3000, lowercase=True)
    meta = tokenize_corpus(data, str(tmp_path / "tok"), tmp_path / "text")
    assert meta["tokenizer"]["lowercase"] is True
    assert meta["splits"]["train"]["tweets"] == 4000
    assert meta["splits"]["train"]["no_piece_words"] > 0
    assert_lossless(data, tmp_path / "text")
    assert json.loads((tmp_path / "text" / "meta.json").read_text(encoding="utf-8")) == meta
