"""Any Hugging Face encoder under MAF, offline: tiny random-init BERT, RoBERTa, XLM-R, DeBERTa-v2
and BERTweet-style encoders, each with a tokenizer of its family trained on the sample corpus
and saved as a local directory, as a downloaded model would be."""
from __future__ import annotations

import json
import logging
import shutil
import unicodedata
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import build_bertweet_style_tokenizer

from cli.maf import main as maf
from cli.pipe import main as pipe
from maf_core.config import MAFConfig, TrainConfig
from maf_core.encoder import save_random_encoder
from maf_core.model import MAF
from maf_core.predict import MAFPredictor
from maf_core.train import train
from pipeline.conll import find_splits, iter_conll
from pipeline.errors import DataError
from pipeline.store import FeatureStore
from pipeline.tokenization import load_tokenizer, read_meta, tokenize_corpus, tokenizer_family
from pipeline.vocab import build_vocab

# family: (model_type, tokenizer kind, tokenizer family, T_s with pooling auto)
FAMILIES = {
    "bert": ("bert", "wordpiece", "wordpiece", "pooler"),
    "roberta": ("roberta", "bpe", "byte-level-bpe", "first"),
    "xlm-roberta": ("xlm-roberta", "unigram", "sentencepiece", "first"),
    "deberta-v2": ("deberta-v2", "unigram", "sentencepiece", "first"),
    "bertweet": ("roberta", "bertweet", "slow", "first"),
}


def _corpus_words(sample_dir: Path) -> list[str]:
    return [w for path in find_splits(sample_dir).values() for tweet in iter_conll(path) for w in tweet.words]


def make_encoder_dir(family: str, sample_dir: Path, out: Path) -> Path:
    """A tokenizer of the family's kind and a random-init encoder of its architecture (64 wide,
    4 heads), saved together as a downloaded model would be."""
    model_type, kind, _, _ = FAMILIES[family]
    if kind == "bertweet":
        build_bertweet_style_tokenizer(_corpus_words(sample_dir), out)
    else:
        build_vocab(sample_dir, out, vocab_size=500, kind=kind)
    return save_random_encoder(out, out, model_type, width=64, layers=2, heads=4)


@pytest.fixture(scope="module")
def families(sample_dir, tmp_path_factory):
    """family name -> its encoder directory and the sample corpus tokenized with it, built once."""
    built: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in built:
            root = tmp_path_factory.mktemp(name)
            encoder = make_encoder_dir(name, sample_dir, root / "encoder")
            tokenize_corpus(sample_dir, str(encoder), root / "text", max_length=64)
            built[name] = {"name": name, "encoder": encoder, "text": root / "text", "root": root}
        return built[name]
    return get


@pytest.fixture(params=list(FAMILIES))
def family(request, families) -> dict:
    return families(request.param)


def _word_text(tokenizer, pieces: list[int]) -> str:
    """The pieces read back as text, without the spaces WordPiece puts between punctuation and letters."""
    return "".join(tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens(pieces)).split())


def test_meta_records_the_tokenizer_family(family):
    assert read_meta(family["text"])["tokenizer"]["family"] == FAMILIES[family["name"]][2]


def test_every_word_keeps_its_own_pieces(family):
    """No word dropped or shifted: each word's pieces, from its start to the next word's,
    read back as the word itself (words the vocabulary cannot spell, with <unk>, aside)."""
    from maf_core.data import load_split

    tokenizer = load_tokenizer(family["encoder"])
    checked = 0
    for name in ("train", "test"):
        split = load_split(family["text"], name)
        for words, ids, starts in zip(split.words, split.input_ids, split.word_starts):
            assert len(starts) == len(words)
            assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
            bounds = [*starts, len(ids) - 1]
            for w, word in enumerate(words):
                pieces = ids[bounds[w]:bounds[w + 1]]
                assert pieces, (word, words)
                if tokenizer.unk_token_id in pieces or unicodedata.normalize("NFKC", word) != word:
                    continue
                assert _word_text(tokenizer, pieces) == "".join(word.split()), (w, word, words)
                checked += 1
    assert checked > 500


def test_byte_level_words_get_the_leading_space_of_running_text(families):
    from maf_core.data import load_split

    family = families("roberta")
    tokenizer = load_tokenizer(family["encoder"])
    split = load_split(family["text"], "train")
    first_pieces = [tokenizer.convert_ids_to_tokens(ids[s]) for ids, starts in zip(split.input_ids, split.word_starts)
                    for s in starts]
    firsts = [tokenizer.convert_ids_to_tokens(ids[starts[0]]) for ids, starts in zip(split.input_ids,
                                                                                        split.word_starts)]
    assert not any(piece.startswith("Ġ") for piece in firsts)  # the first word: no space before it
    later = len(first_pieces) - len(firsts)
    assert sum(piece.startswith("Ġ") for piece in first_pieces) == later  # every other word: Ġ


@pytest.mark.slow
def test_tokenize_train_predict_with_each_family(family, sample_store, tmp_path):
    run, encoder = tmp_path / "run", tmp_path / "encoder"
    shutil.copytree(family["encoder"], encoder)
    done = CliRunner().invoke(maf, ["train", "--features", str(sample_store), "--text", str(family["text"]),
                                    "--bert", str(encoder), "--out", str(run), "--epochs", "1",
                                    "--batch-size", "32", "--device", "cpu", "--no-tensorboard"])
    assert done.exit_code == 0, done.output
    config = MAF.from_pretrained(run).config
    assert (config.hidden_size, config.heads, config.interaction_ffn, config.alignment_hidden) == (64, 4, 256, 64)
    assert config.pooling == FAMILIES[family["name"]][3]
    assert json.loads((run / "report.json").read_text())["encoder"] == f"{encoder} (pretrained)"
    shutil.rmtree(encoder)  # the run predicts with its own copies: weights and tokenizer
    tweets = [json.loads(x) for x in (run / "predictions" / "test.jsonl").read_text().splitlines()][:6]
    out = MAFPredictor.from_pretrained(run).predict([{"id": t["id"], "words": t["words"]} for t in tweets],
                                                    features=sample_store)
    assert [o["tags"] for o in out] == [t["predicted"] for t in tweets]


@pytest.mark.parametrize("width, heads", [(64, 4), (256, 4), (1024, 16)])
def test_d_heads_and_widths_follow_the_encoder(width, heads):
    from transformers import BertConfig

    encoder = BertConfig(vocab_size=100, hidden_size=width, num_attention_heads=heads, intermediate_size=4 * width,
                         num_hidden_layers=1).to_dict()
    with torch.device("meta"):
        model = MAF(MAFConfig.from_preset("paper", bert_config=encoder, vocab_size=100))
    cfg = model.config
    assert (cfg.hidden_size, cfg.heads, cfg.interaction_ffn, cfg.alignment_hidden) == (width, heads, 4 * width, width)
    assert model.emission.in_features == 2 * width and model.matching.classifier.in_features == 128 * 2 * width
    assert model.interaction.heads == heads and model.interaction.ffn[0].out_features == 4 * width
    assert model.alignment.text_projection[0].out_features == width


def test_heads_that_do_not_divide_the_width_are_refused_in_one_line(families, sample_store, tmp_path):
    family = families("bert")
    done = CliRunner().invoke(maf, ["train", "--features", str(sample_store), "--text", str(family["text"]),
                                    "--bert", str(family["encoder"]), "--heads", "12", "--out", str(tmp_path / "r"),
                                    "--epochs", "1", "--device", "cpu"])
    assert done.exit_code == 1 and "Traceback" not in done.output
    assert done.output.strip() == (f"Error: heads 12: CI's attention heads must divide the text encoder's width 64 "
                                   f"({family['encoder']}); leave heads unset to use the encoder's 4")
    assert not (tmp_path / "r").exists()  # nothing written: the corrected command runs without --resume


def test_a_pooler_is_refused_for_an_encoder_without_one(families):
    family = families("deberta-v2")
    with pytest.raises(DataError, match="pooling pooler: DebertaV2Model has no pooler; use pooling first or mean"):
        MAF(MAFConfig.tiny(bert=str(family["encoder"]), pooling="pooler"))


def test_mean_pooling_averages_the_real_pieces():
    model = MAF(MAFConfig.tiny(pooling="mean")).eval()
    ids = torch.tensor([[2, 5, 6, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    text, sentence = model.encode_text(ids, mask)
    assert torch.allclose(sentence, text[:, :4].mean(1))


def test_a_random_encoder_is_never_silent(sample_text, sample_store, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="maf_core.train"):
        report = train(FeatureStore(sample_store), sample_text, tmp_path / "run", MAFConfig.tiny(scheme="bioes"),
                       TrainConfig(epochs=1, batch_size=32, device="cpu", tensorboard=False))
    assert "the text encoder is a RANDOM-init BERT-tiny (no --bert)" in caplog.text
    assert report["encoder"] == "a RANDOM-init BERT-tiny"
    from maf_core.report import comparison_table, load_runs

    table = comparison_table(load_runs([tmp_path / "run"]), {})
    assert table.splitlines()[1].startswith("run *") and "RANDOM-init text encoder" in table.splitlines()[-1]


def test_build_vocab_offers_each_kind(sample_dir, tmp_path):
    for kind, expected in (("wordpiece", "wordpiece"), ("bpe", "byte-level-bpe"), ("unigram", "sentencepiece")):
        done = CliRunner().invoke(pipe, ["build-vocab", str(sample_dir), "--out", str(tmp_path / kind),
                                         "--vocab-size", "300", "--kind", kind])
        assert done.exit_code == 0, done.output
        assert tokenizer_family(load_tokenizer(tmp_path / kind)) == expected


def test_a_unigram_vocabulary_is_the_same_every_time(sample_dir, tmp_path):
    from pipeline.tokenization import vocab_sha256

    digests = {vocab_sha256(load_tokenizer(build_vocab(sample_dir, tmp_path / str(n), vocab_size=300,
                                                       kind="unigram")["out_dir"])) for n in range(3)}
    assert len(digests) == 1


def test_an_encoder_saved_in_half_precision_trains_in_fp32(families, tmp_path):
    from transformers import AutoModel

    source = families("bert")["encoder"]
    half = tmp_path / "half"
    shutil.copytree(source, half)
    AutoModel.from_pretrained(str(source)).half().save_pretrained(str(half))
    model = MAF(MAFConfig.tiny(bert=str(half), scheme="bioes"))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
