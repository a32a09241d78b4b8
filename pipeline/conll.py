"""Read and write the UMT/MAF CoNLL format, streaming.

One record per tweet::

    IMGID:<id>
    token<TAB>label
    ...
    <blank line>

Labels are BIO over PER, LOC, ORG and MISC; Twitter-2015 spells MISC as OTHER, which is
read as MISC. Ill-formed I- tags (an I- after O or after another type) are kept exactly as
they are: scoring treats them conlleval-style (see `pipeline.schemes`).

Reading is strict: every error names `file:line` and says what was expected. Input may
be UTF-8 with or without a byte-order mark, with LF or CRLF line endings and any number of
blank lines between records. Writing is canonical (LF, one blank line after each record),
and reading then writing a canonical file gives the same bytes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from pipeline.errors import DataError
from pipeline.files import atomic_output

ENTITY_TYPES = ("PER", "LOC", "ORG", "MISC")
TYPE_ALIASES = {"OTHER": "MISC"}
SPLITS = ("train", "valid", "test")
# file names tried for each split, in order
SPLIT_FILES = {"train": ("train.txt",), "valid": ("valid.txt", "dev.txt"), "test": ("test.txt",)}

IMGID_PREFIX = "IMGID:"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Tweet:
    """One record: the image id, its words and their BIO labels (OTHER already read as MISC)."""

    image_id: str
    words: list[str]
    labels: list[str]
    line: int = 0  # 1-based line of the IMGID line in the source file (0: not from a file)


def normalize_label(label: str) -> str | None:
    """The canonical form of a BIO label (`B-OTHER` -> `B-MISC`), or None if it is not one."""
    if label == "O":
        return label
    prefix, sep, entity_type = label.partition("-")
    if not sep or prefix not in ("B", "I"):
        return None
    entity_type = TYPE_ALIASES.get(entity_type, entity_type)
    if entity_type not in ENTITY_TYPES:
        return None
    return f"{prefix}-{entity_type}"


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without its line ending), splitting on LF only.

    Binary reading keeps characters such as U+2028 or a lone CR inside a token intact,
    where text mode would break the line there.
    """
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a CoNLL file") from None
    with handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            raw = raw.rstrip(b"\n")
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            try:
                yield line_no, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{path}:{line_no}: not valid UTF-8 ({err.reason} at byte {err.start} of the line)"
                ) from None


def iter_conll(path: str | os.PathLike) -> Iterator[Tweet]:
    """Stream the tweets of one CoNLL file, validating as it goes.

    Raises `DataError` naming `file:line` for: a record that does not start with an
    `IMGID:` line, a token line without a tab, more than two columns, an empty token, an
    unknown label, an IMGID with no token lines or repeated within the file, and a file
    with no record at all.
    """
    path = Path(path)
    seen: dict[str, int] = {}  # image id -> line of its IMGID
    image_id: str | None = None
    start = 0
    words: list[str] = []
    labels: list[str] = []
    count = 0

    def current_tweet() -> Tweet:
        if not words:
            raise DataError(f"{path}:{start}: IMGID:{image_id} has no 'token<TAB>label' lines")
        return Tweet(image_id, words, labels, start)

    for line_no, line in _lines(path):
        if not line.strip():
            if image_id is not None:
                yield current_tweet()
                count += 1
                image_id, words, labels = None, [], []
            continue
        if line.startswith(IMGID_PREFIX) and "\t" not in line:
            if image_id is not None:  # a new record without a blank line before it
                yield current_tweet()
                count += 1
                words, labels = [], []
            image_id, start = _image_id(path, line_no, line, seen), line_no
            continue
        if image_id is None:
            raise DataError(
                f"{path}:{line_no}: expected an 'IMGID:<id>' line to start a record, got {line!r}"
            )
        token, label = _token_and_label(path, line_no, line)
        words.append(token)
        labels.append(label)

    if image_id is not None:
        yield current_tweet()
        count += 1
    if count == 0:
        raise DataError(
            f"{path}: no record found; expected 'IMGID:<id>' lines, each followed by "
            "'token<TAB>label' lines and a blank line"
        )


def _image_id(path: Path, line_no: int, line: str, seen: dict[str, int]) -> str:
    """The id of an 'IMGID:<id>' line, new within the file (`seen`: id -> its line, updated)."""
    image_id = line[len(IMGID_PREFIX):].strip()
    if not image_id:
        raise DataError(f"{path}:{line_no}: expected 'IMGID:<id>', the id is empty")
    if image_id in seen:
        raise DataError(
            f"{path}:{line_no}: duplicate IMGID:{image_id} "
            f"(first at line {seen[image_id]}); each tweet of a split needs its own id"
        )
    seen[image_id] = line_no
    return image_id


def _token_and_label(path: Path, line_no: int, line: str) -> tuple[str, str]:
    """The token and canonical label of a 'token<TAB>label' line."""
    columns = line.split("\t")
    if len(columns) == 1:
        raise DataError(f"{path}:{line_no}: expected 'token<TAB>label', got {line!r} (no tab)")
    if len(columns) > 2:
        raise DataError(
            f"{path}:{line_no}: expected 2 tab-separated columns 'token<TAB>label', "
            f"found {len(columns)} in {line!r}"
        )
    token, label = columns[0], columns[1].strip()
    if token == "":
        raise DataError(f"{path}:{line_no}: empty token before the tab in {line!r}")
    canonical = normalize_label(label)
    if canonical is None:
        raise DataError(
            f"{path}:{line_no}: unknown label {label!r}; expected O, or B-/I- followed by "
            f"one of {', '.join(ENTITY_TYPES)} (OTHER is read as MISC)"
        )
    return token, canonical


def read_conll(path: str | os.PathLike) -> list[Tweet]:
    """All tweets of a CoNLL file (see `iter_conll`)."""
    return list(iter_conll(path))


def format_tweet(tweet: Tweet) -> str:
    """The canonical text of one record, blank line included."""
    if len(tweet.words) != len(tweet.labels):
        raise ValueError(
            f"IMGID:{tweet.image_id}: {len(tweet.words)} words but {len(tweet.labels)} labels"
        )
    lines = [f"{IMGID_PREFIX}{tweet.image_id}"]
    for word, label in zip(tweet.words, tweet.labels):
        if not word or any(ch in word for ch in "\t\n"):
            raise ValueError(f"IMGID:{tweet.image_id}: word {word!r} cannot be written in CoNLL")
        lines.append(f"{word}\t{label}")
    return "\n".join(lines) + "\n\n"


def write_conll(tweets: Iterable[Tweet], out: str | os.PathLike | IO[str]) -> None:
    """Write tweets in canonical form; a path is written to a temporary name, then renamed."""
    if hasattr(out, "write"):
        for tweet in tweets:
            out.write(format_tweet(tweet))
        return
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, "w") as handle:
        for tweet in tweets:
            handle.write(format_tweet(tweet))


def find_splits(data_dir: str | os.PathLike) -> dict[str, Path]:
    """The split files present in a corpus directory: {'train': .../train.txt, ...}.

    `valid.txt` and `dev.txt` both name the validation split; having both is an error.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such directory (expected train.txt, valid.txt or dev.txt, test.txt)")
    found: dict[str, Path] = {}
    for split in SPLITS:
        present = [data_dir / name for name in SPLIT_FILES[split] if (data_dir / name).is_file()]
        if len(present) > 1:
            raise DataError(
                f"{data_dir}: both {present[0].name} and {present[1].name} exist; "
                f"keep one of them for the {split} split"
            )
        if present:
            found[split] = present[0]
    if not found:
        raise DataError(
            f"{data_dir}: no split file found; expected train.txt, valid.txt (or dev.txt) and test.txt"
        )
    return found
