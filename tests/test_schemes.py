from __future__ import annotations

import random

import pytest
from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities

from pipeline.schemes import bioes_to_bio, convert, get_entities, tag_list


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
        (["O", "I-PER"], ["O", "S-PER"]),
        (["B-PER", "I-LOC", "I-LOC"], ["S-PER", "B-LOC", "E-LOC"]),              # I- of another type
        (["I-PER"], ["S-PER"]),
        (["B-PER", "B-PER", "I-PER"], ["S-PER", "B-PER", "E-PER"]),
        (["B-ORG", "I-ORG", "I-ORG", "O", "B-MISC"], ["B-ORG", "I-ORG", "E-ORG", "O", "S-MISC"]),
        ([], []),
    ],
)
def test_convert_to_bioes_on_ill_formed_sequences(bio, bioes):
    assert convert(bio, "bioes") == bioes


def test_bio_scheme_keeps_the_source_tags():
    assert convert(["O", "I-PER"], "bio") == ["O", "I-PER"]


@pytest.mark.parametrize(
    "bioes, bio",
    [
        (["O", "B-PER", "E-PER", "S-LOC", "S-LOC"], ["O", "B-PER", "I-PER", "B-LOC", "B-LOC"]),
        # an ill-formed prediction: E- after O is a chunk of its own, I- after S- starts another
        (["E-PER", "S-LOC", "I-LOC"], ["B-PER", "B-LOC", "B-LOC"]),
    ],
)
def test_bioes_to_bio_is_well_formed(bioes, bio):
    assert bioes_to_bio(bioes) == bio


def test_conversions_keep_every_chunk():
    rng = random.Random(1)
    for _ in range(2000):
        bio = random_tags(rng, "BI", rng.randint(0, 8))
        bioes = convert(bio, "bioes")
        assert get_entities(bioes) == get_entities(bio)
        assert get_entities(bioes_to_bio(bioes)) == get_entities(bio)
        assert convert(bioes_to_bio(bioes), "bioes") == bioes


def test_entities_are_type_start_end_exclusive():
    assert get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 2), ("LOC", 3, 4)]


def test_bio_tag_list_is_o_then_b_and_i_per_type():
    assert tag_list("bio") == ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]


def test_bioes_tag_list_is_o_then_b_i_e_s_per_type():
    assert len(tag_list("bioes")) == 17 and tag_list("bioes")[:5] == ["O", "B-PER", "I-PER", "E-PER", "S-PER"]


@pytest.mark.parametrize("call", [lambda: tag_list("bilou"), lambda: convert(["O"], "bilou")],
                         ids=["tag_list", "convert"])
def test_unknown_scheme_is_refused(call):
    with pytest.raises(ValueError, match="unknown tag scheme 'bilou'; expected one of bioes, bio"):
        call()
