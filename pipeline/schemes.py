"""Label schemes (BIO, BIOES) and conlleval-style chunking.

Chunks follow conlleval exactly (the rules seqeval's default mode also uses): a chunk
starts at B-/S-, at an I-/E- that follows O, E- or S-, or at any tag whose type differs
from the previous tag's type; it ends before such a start or an O. So `O I-PER I-PER`
is one PER chunk and `B-PER I-LOC` two chunks. Conversions go through these chunks, so
BIO -> BIOES -> BIO keeps every chunk of an ill-formed sequence (the tags themselves
come back in well-formed BIO).
"""
from __future__ import annotations

from typing import Sequence

from pipeline.conll import ENTITY_TYPES

SCHEMES = ("bioes", "bio")
_PREFIXES = {"bio": ("B", "I"), "bioes": ("B", "I", "E", "S")}


def tag_list(scheme: str, entity_types: Sequence[str] = ENTITY_TYPES) -> list[str]:
    """All tags of a scheme, O first: ['O', 'B-PER', 'I-PER', 'E-PER', 'S-PER', 'B-LOC', ...]."""
    if scheme not in _PREFIXES:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    return ["O"] + [f"{p}-{t}" for t in entity_types for p in _PREFIXES[scheme]]


def _split(tag: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, _, entity_type = tag.partition("-")
    return prefix, entity_type


def _ends(prev_prefix: str, prev_type: str, prefix: str, entity_type: str) -> bool:
    """Whether a chunk ends between the previous tag and this one (conlleval endOfChunk)."""
    if prev_prefix in ("E", "S"):
        return True
    if prev_prefix in ("B", "I") and prefix in ("B", "S", "O"):
        return True
    return prev_prefix != "O" and prev_type != entity_type


def _starts(prev_prefix: str, prev_type: str, prefix: str, entity_type: str) -> bool:
    """Whether a chunk starts at this tag (conlleval startOfChunk)."""
    if prefix in ("B", "S"):
        return True
    if prev_prefix in ("E", "S", "O") and prefix in ("E", "I"):
        return True
    return prefix != "O" and prev_type != entity_type


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Chunks of a BIO or BIOES tag sequence as (type, start, end), end exclusive."""
    entities = []
    prev_prefix, prev_type, begin = "O", "", -1
    for i, tag in enumerate([*tags, "O"]):
        if tag == "O" and prev_prefix == "O":  # most words: nothing starts or ends here
            continue
        prefix, entity_type = _split(tag)
        if begin >= 0 and _ends(prev_prefix, prev_type, prefix, entity_type):
            entities.append((prev_type, begin, i))
            begin = -1
        if _starts(prev_prefix, prev_type, prefix, entity_type):
            begin = i
        prev_prefix, prev_type = prefix, entity_type
    return entities


def tags_from_entities(entities: list[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    """Well-formed tags of a scheme ('bio' or 'bioes') for the given chunks."""
    tags = ["O"] * length
    for entity_type, start, end in entities:
        if scheme == "bioes" and end - start == 1:
            tags[start] = f"S-{entity_type}"
            continue
        tags[start] = f"B-{entity_type}"
        for i in range(start + 1, end):
            tags[i] = f"I-{entity_type}"
        if scheme == "bioes":
            tags[end - 1] = f"E-{entity_type}"
    return tags


def bioes_to_bio(tags: Sequence[str]) -> list[str]:
    """BIOES (or BIO) to well-formed BIO with the same conlleval chunks."""
    return tags_from_entities(get_entities(tags), len(tags), "bio")


def convert(tags: Sequence[str], scheme: str, entities: list[tuple[str, int, int]] | None = None) -> list[str]:
    """Source BIO tags in the given training scheme ('bio' keeps the source tags as they are).

    `entities`, if the caller already has `get_entities(tags)`, saves computing them again.
    """
    if scheme == "bioes":
        return tags_from_entities(get_entities(tags) if entities is None else entities, len(tags), "bioes")
    if scheme == "bio":
        return list(tags)
    raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
