from __future__ import annotations

import pytest
from helpers import twitter_style_tweets, write_text

from pipeline.conll import Tweet, find_splits, format_tweet, iter_conll, read_conll, write_conll
from pipeline.errors import DataError

CANONICAL = (
    "IMGID:1015799\nRT\tO\n@user\tO\n:\tO\nHandsome\tO\nRob\tB-MISC\nafter\tO\n\n"
    "IMGID:O_42\nKevin\tB-PER\nDurant\tI-PER\nin\tO\nOklahoma\tI-LOC\ncity\tI-LOC\n\n"
)


def test_read_then_write_canonical_gives_same_bytes(tmp_path):
    src = write_text(tmp_path / "train.txt", CANONICAL)
    out = tmp_path / "out.txt"
    write_conll(iter_conll(src), out)
    assert out.read_bytes() == src.read_bytes()


def test_round_trip_of_hard_characters_is_byte_identical(tmp_path):
    tweets = twitter_style_tweets(300, seed=1)
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    write_conll(tweets, first)
    back = read_conll(first)
    assert [(t.image_id, t.words, t.labels) for t in back] == [(t.image_id, t.words, t.labels) for t in tweets]
    write_conll(back, second)
    assert second.read_bytes() == first.read_bytes()


def test_records_fields_and_ill_formed_tags_kept(tmp_path):
    tweets = read_conll(write_text(tmp_path / "t.txt", CANONICAL))
    assert [t.image_id for t in tweets] == ["1015799", "O_42"]
    assert tweets[0].words[4] == "Rob" and tweets[0].labels[4] == "B-MISC"
    assert tweets[1].labels == ["B-PER", "I-PER", "O", "I-LOC", "I-LOC"]  # I- after O is kept
    assert tweets[1].line == 9


def test_bom_crlf_trailing_blank_lines_and_other_alias(tmp_path):
    text = "IMGID:1\r\nRob\tB-OTHER\r\nsays\tO\r\n\r\n\r\n\r\nIMGID:2\r\nhi\tI-OTHER\r\n\r\n\r\n\r\n"
    path = write_text(tmp_path / "t.txt", "\ufeff" + text)
    tweets = read_conll(path)
    assert [(t.image_id, t.words, t.labels) for t in tweets] == [
        ("1", ["Rob", "says"], ["B-MISC", "O"]),
        ("2", ["hi"], ["I-MISC"]),
    ]


def test_file_without_final_blank_line(tmp_path):
    tweets = read_conll(write_text(tmp_path / "t.txt", "IMGID:1\nhi\tO"))
    assert tweets[0].words == ["hi"]


def test_lone_carriage_return_and_line_separator_stay_inside_a_token(tmp_path):
    path = write_text(tmp_path / "t.txt", "IMGID:1\na\u2028b\tO\nc\rd\tO\n\n")
    assert read_conll(path)[0].words == ["a\u2028b", "c\rd"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("hello\tO\n\n", r"t\.txt:1: expected an 'IMGID:<id>' line to start a record, got 'hello\\tO'"),
        ("IMGID:1\nhello O\n\n", r"t\.txt:2: expected 'token<TAB>label', got 'hello O' \(no tab\)"),
        ("IMGID:1\nhello\tO\tX\n\n", r"t\.txt:2: expected 2 tab-separated columns .* found 3"),
        ("IMGID:1\nhello\tB-FOO\n\n", r"t\.txt:2: unknown label 'B-FOO'; expected O, or B-/I-"),
        ("IMGID:1\nhello\tE-PER\n\n", r"t\.txt:2: unknown label 'E-PER'"),
        ("IMGID:1\n\tO\n\n", r"t\.txt:2: empty token"),
        ("IMGID:7\na\tO\n\nIMGID:8\nb\tO\n\nIMGID:7\nc\tO\n\n", r"t\.txt:7: duplicate IMGID:7 \(first at line 1\)"),
        ("\n\n\n", r"t\.txt: no record found"),
        ("", r"t\.txt: no record found"),
        ("IMGID:\nhi\tO\n\n", r"t\.txt:1: expected 'IMGID:<id>', the id is empty"),
        ("IMGID:1\n\nIMGID:2\nhi\tO\n", r"t\.txt:1: IMGID:1 has no 'token<TAB>label' lines"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, text, match):
    path = write_text(tmp_path / "t.txt", text)
    with pytest.raises(DataError, match=match):
        read_conll(path)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"IMGID:1\nok\tO\nbad\xff\tO\n\n")
    with pytest.raises(DataError, match=r"t\.txt:3: not valid UTF-8"):
        read_conll(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.txt: no such file"):
        read_conll(tmp_path / "nope.txt")


def test_streaming_yields_before_reading_the_whole_file(tmp_path):
    path = write_text(tmp_path / "t.txt", "IMGID:1\na\tO\n\nIMGID:2\nb\tBAD\n\n")
    records = iter_conll(path)
    assert next(records).image_id == "1"  # the bad record further on is not read yet
    with pytest.raises(DataError, match=":5: unknown label"):
        next(records)


def test_writer_refuses_words_that_cannot_be_written():
    with pytest.raises(ValueError, match="cannot be written"):
        format_tweet(Tweet("1", ["a\tb"], ["O"]))
    with pytest.raises(ValueError, match="1 words but 2 labels"):
        format_tweet(Tweet("1", ["a"], ["O", "O"]))


def test_find_splits_accepts_dev_and_refuses_both(tmp_path):
    for name in ("train.txt", "dev.txt", "test.txt"):
        write_text(tmp_path / name, "IMGID:1\na\tO\n\n")
    assert {k: v.name for k, v in find_splits(tmp_path).items()} == {
        "train": "train.txt", "valid": "dev.txt", "test": "test.txt"}
    write_text(tmp_path / "valid.txt", "IMGID:1\na\tO\n\n")
    with pytest.raises(DataError, match="both valid.txt and dev.txt exist"):
        find_splits(tmp_path)


def test_find_splits_errors(tmp_path):
    with pytest.raises(DataError, match="no such directory"):
        find_splits(tmp_path / "missing")
    with pytest.raises(DataError, match="no split file found"):
        find_splits(tmp_path)
