from __future__ import annotations

import random

import pytest
from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities

from pipeline.schemes import bio_to_bioes, bioes_to_bio, convert, get_entities, tag_list


def random_tags(rng: random.Random, prefixes: str, length: int) -> list[str]:
    tags = []
    for _ in range(length):
        prefix = rng.choice(prefixes + "O")
        tags.append("O" if prefix == "O" else f"{prefix}-{rng.choice(['PER', 'LOC'])}")
    return tags


def as_seqeval(entities):
    return [(t, s, e - 1) for t, s, e in entities]  # seqeval's ends are inclusive


@pytest.mark.parametrize("prefixes", ["BI", "BIES"])
def test_chunks_agree_with_seqeval_default_mode_on_random_ill_formed_sequences(prefixes):
    rng = random.Random(0)
    for _ in range(3000):
        tags = random_tags(rng, prefixes, rng.randint(0, 9))
        assert as_seqeval(get_entities(tags)) == seqeval_entities(tags), tags


@pytest.mark.parametrize(
    "bio, bioes",
    [
        (["O", "I-PER", "I-PER", "O"], ["O", "B-PER", "E-PER", "O"]),           # I- after O starts a chunk
        (["B-PER", "I-LOC", "I-LOC"], ["S-PER", "B-LOC", "E-LOC"]),              # I- of another type
        (["I-PER"], ["S-PER"]),
        (["B-PER", "B-PER", "I-PER"], ["S-PER", "B-PER", "E-PER"]),
        (["B-ORG", "I-ORG", "I-ORG", "O", "B-MISC"], ["B-ORG", "I-ORG", "E-ORG", "O", "S-MISC"]),
        ([], []),
    ],
)
def test_bio_to_bioes_on_ill_formed_sequences(bio, bioes):
    assert bio_to_bioes(bio) == bioes


def test_bioes_to_bio_is_well_formed():
    assert bioes_to_bio(["O", "B-PER", "E-PER", "S-LOC", "S-LOC"]) == ["O", "B-PER", "I-PER", "B-LOC", "B-LOC"]
    # an ill-formed prediction: E- after O is a chunk of its own, I- after S- starts another
    assert bioes_to_bio(["E-PER", "S-LOC", "I-LOC"]) == ["B-PER", "B-LOC", "B-LOC"]


def test_conversions_keep_every_chunk():
    rng = random.Random(1)
    for _ in range(2000):
        bio = random_tags(rng, "BI", rng.randint(0, 8))
        bioes = bio_to_bioes(bio)
        assert get_entities(bioes) == get_entities(bio)
        assert get_entities(bioes_to_bio(bioes)) == get_entities(bio)
        assert bio_to_bioes(bioes_to_bio(bioes)) == bioes


def test_entities_are_type_start_end_exclusive():
    assert get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]


def test_tag_lists_and_convert():
    assert tag_list("bio") == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
    assert len(tag_list("bioes")) == 17 and tag_list("bioes")[:5] == ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
    assert convert(["O", "I-PER"], "bio") == ["O", "I-PER"]  # bio keeps source tags
    assert convert(["O", "I-PER"], "bioes") == ["O", "S-PER"]
    with pytest.raises(ValueError, match="unknown tag scheme 'bilou'"):
        tag_list("bilou")
