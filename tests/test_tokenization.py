from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import twitter_style_tweets, write_text

from pipeline import tokenization
from pipeline.conll import Tweet, read_conll, write_conll
from pipeline.errors import DataError
from pipeline.schemes import convert, tag_list
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
            assert [tags[i] for i in row["tag_ids"]] == convert(tweet.labels, scheme)
            assert row["input_ids"][0] == meta["tokenizer"]["cls_id"]
            assert row["input_ids"][-1] == meta["tokenizer"]["sep_id"]
            assert len(row["input_ids"]) <= meta["max_length"]


@pytest.fixture(scope="module")
def sample_text(sample_dir, tokenizer_dir, tmp_path_factory) -> tuple[dict, Path]:
    """The sample corpus tokenized with the default settings: (meta, text_dir). Read only."""
    text = tmp_path_factory.mktemp("sample-text") / "text"
    return tokenize_corpus(sample_dir, str(tokenizer_dir), text), text


def test_sample_corpus_round_trips(sample_dir, sample_text):
    assert_lossless(sample_dir, sample_text[1])


def test_meta_lists_every_split_of_the_corpus(sample_text):
    assert set(sample_text[0]["splits"]) == {"train", "valid", "test"}


def test_default_scheme_is_bioes(sample_text):
    meta, _ = sample_text
    assert meta["scheme"] == "bioes" and meta["tags"] == tag_list("bioes")


def test_meta_records_the_tokenizers_vocabulary_and_casing(sample_text, tokenizer_dir):
    tokenizer = sample_text[0]["tokenizer"]
    assert tokenizer["vocab_sha256"] == tokenization.vocab_sha256(load_tokenizer(str(tokenizer_dir)))
    assert tokenizer["lowercase"] is False


def test_word_starts_point_at_each_words_first_piece(sample_text, tokenizer_dir):
    tokenizer = load_tokenizer(str(tokenizer_dir))
    for row in read_split(sample_text[1], "valid").to_pylist()[:30]:
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


def test_lowercasing_tokenizer_strips_lone_marks_to_nothing(lowercase_tokenizer_dir):
    # Twitter-2017 has a lone variation selector (U+FE0F) as a token after '☀'; an uncased
    # BERT strips marks, so such a word gives no piece at all.
    tokenizer = load_tokenizer(str(lowercase_tokenizer_dir))
    tweet = Tweet("16_05_19_911", ["vodka", "☀", "\ufe0f", "\u0301"], ["O"] * 4)
    result = tokenize_tweets([tweet], tokenizer)
    assert [item["index"] for item in result.no_piece_words] == [2, 3]
    row = result.table.to_pylist()[0]
    assert [row["input_ids"][s] for s in row["word_starts"][2:]] == [tokenizer.unk_token_id] * 2


LONG_WORDS = [f"w{i}" for i in range(20)] + ["Rob"]
LONG_LABELS = ["O"] * 20 + ["B-PER"]


@pytest.fixture(scope="module")
def truncated(tokenizer_dir):
    """A 21-word tweet (id 2, line 7) cut at 12 pieces, tokenized together with a 1-word one."""
    tokenizer = load_tokenizer(str(tokenizer_dir))
    tweets = [Tweet("2", LONG_WORDS, LONG_LABELS, line=7), Tweet("1", ["hi"], ["O"])]
    return tokenizer, tokenize_tweets(tweets, tokenizer, max_length=12, split="train")


def test_a_long_tweet_is_cut_to_max_length_and_ends_with_sep(truncated):
    tokenizer, result = truncated
    long_row = result.table.to_pylist()[0]
    assert len(long_row["input_ids"]) == 12 and long_row["input_ids"][-1] == tokenizer.sep_token_id


def test_words_kept_after_a_cut_start_between_cls_and_sep(truncated):
    kept = [s for s in truncated[1].table.to_pylist()[0]["word_starts"] if s >= 0]
    assert all(0 < s < 11 for s in kept)


def test_a_word_cut_off_has_start_minus_one(truncated):
    assert truncated[1].table.to_pylist()[0]["word_starts"][-1] == -1  # Rob lost its first piece


def test_a_cut_tweet_keeps_every_word_and_label(truncated):
    long_row = truncated[1].table.to_pylist()[0]
    assert long_row["words"] == LONG_WORDS and long_row["labels"] == LONG_LABELS  # Rob is not dropped


def test_a_cut_tweet_is_listed_with_its_id_line_and_dropped_words(truncated):
    listed = truncated[1].truncated
    assert len(listed) == 1 and listed[0]["image_id"] == "2"
    assert listed[0]["dropped_words"][-1] == "Rob"
    assert listed[0]["line"] == 7


def test_truncated_tweets_and_words_are_counted(truncated):
    result = truncated[1]
    assert result.stats["truncated_tweets"] == 1
    assert result.stats["truncated_words"] == len(result.truncated[0]["dropped_words"])


def test_a_short_tweet_beside_a_cut_one_is_untouched(truncated):
    assert truncated[1].table.to_pylist()[1]["word_starts"] == [1]


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


def test_a_missing_tokenizer_directory_is_refused(sample_dir, tmp_path):
    with pytest.raises(DataError, match="no-such-tokenizer: no such tokenizer directory"):
        tokenize_corpus(sample_dir, str(tmp_path / "no-such-tokenizer"), tmp_path / "text")
    assert not (tmp_path / "text").exists()


def test_a_directory_without_a_tokenizer_is_refused(sample_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot load a tokenizer from '.*empty'"):
        tokenize_corpus(sample_dir, str(tmp_path / "empty"), tmp_path / "text")
    assert not (tmp_path / "text").exists()


@pytest.mark.parametrize("max_length, match", [(1000, "exceeds the tokenizer's limit of 512"), (2, "too small")])
def test_max_length_outside_the_tokenizers_range_is_refused(sample_dir, tokenizer_dir, tmp_path, max_length, match):
    with pytest.raises(DataError, match=match):
        tokenize_corpus(sample_dir, str(tokenizer_dir), tmp_path / "text", max_length=max_length)
    assert not (tmp_path / "text").exists()


def test_reading_meta_of_an_empty_directory_is_refused(tmp_path):
    with pytest.raises(DataError, match="meta.json: no such file"):
        read_meta(tmp_path)


def test_reading_a_missing_split_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"train\.arrow: no such file"):
        read_split(tmp_path, "train")


def test_reading_a_split_that_is_not_arrow_is_refused(tmp_path):
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
