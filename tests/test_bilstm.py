"""The word-level path and the BiLSTM taggers (bilstm-crf, cnn-bilstm-crf, hbilstm-crf): words and
characters from the tokenized text, vocabularies of the train split, --word-vectors, and every
reader of their runs."""
from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from click.testing import CliRunner
from helpers import make_batch, whole_and_resumed

from cli.maf import main as maf
from maf_core.config import MAFConfig
from maf_core.data import load_split
from maf_core.inputs import fit_to_inputs, read_inputs
from maf_core.models import MODEL_KEYS, build_model, default_config, fit_to_text, load_model, train_config
from maf_core.models.bilstm import PAD, UNK, build_vocabularies, hash_words, normalize_word, read_vectors, word_key
from pipeline.errors import DataError
from pipeline.store import FeatureStore

WORDS = [["Rob", "at", "the", "beach", "2024"], ["the", "Beach", "is", "nice", "😀"]]
NAMES = ("bilstm-crf", "cnn-bilstm-crf", "hbilstm-crf")


def tiny(name: str, words=WORDS, seed: int = 0, **overrides):
    config = default_config(name, tags=MAFConfig.tiny().tags, word_dim=8, lstm_hidden=6, char_dim=5, char_hidden=4,
                            **overrides)
    torch.manual_seed(seed)
    return build_model(fit_to_text(config, words))


def codes(words: list[str], width: int = 8) -> torch.Tensor:
    """One row of words as code points, shape: (1, len(words), width)."""
    out = torch.zeros(1, len(words), width, dtype=torch.long)
    for w, word in enumerate(words):
        out[0, w, :len(word)] = torch.tensor([ord(c) for c in word[:width]])
    return out


def test_the_tensor_hash_is_the_python_hash_and_digits_read_as_zero():
    words = ["the", "Beach", "2024", "0000", "😀", "éàü", "a" * 8, "x"]
    keys = hash_words(codes(words))[0].tolist()
    assert keys == [word_key(normalize_word(w)) for w in words]
    assert keys[2] == keys[3] and len(set(keys)) == len(keys) - 1


def test_lookup_against_a_dictionary_of_the_vocabulary():
    model = tiny("cnn-bilstm-crf")
    vocab, chars = build_vocabularies(WORDS)
    assert model.config.word_vocab == vocab and model.config.char_vocab == chars
    row = ["the", "2099", "beach", "Beach", "unseen", "😀"]
    word_ids, char_ids = model.lookup(torch.cat([codes(row), torch.zeros(1, 1, 8, dtype=torch.long)], dim=1))
    expected = [vocab.index(normalize_word(w)) + 2 if normalize_word(w) in vocab else UNK for w in row] + [PAD]
    assert word_ids[0].tolist() == expected and expected[4] == UNK and expected[1] == vocab.index("0000") + 2
    index = {c: i + 2 for i, c in enumerate(chars)}
    assert char_ids[0, 4, :6].tolist() == [index.get(c, UNK) for c in "unseen"]
    assert char_ids[0, 0, 3:].tolist() == [PAD] * 5 and char_ids[0, 6].tolist() == [PAD] * 8


def test_vocabularies_are_the_train_splits(sample_text):
    """Built from train only: a word that only dev has is unknown to the model."""
    train_words = load_split(sample_text, "train").words
    dev_words = load_split(sample_text, "valid").words
    config = fit_to_text(default_config("hbilstm-crf"), train_words)
    seen = {normalize_word(w) for tweet in train_words for w in tweet}
    assert set(config.word_vocab) == seen
    only_dev = {normalize_word(w) for tweet in dev_words for w in tweet} - seen
    assert only_dev and not only_dev & set(config.word_vocab)


def test_word_vectors_fill_the_embeddings_of_the_words_they_have(tmp_path):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("3 4\nthe 1 2 3 4\nbeach 0.5 0.5 0.5 0.5\nunused 9 9 9 9\n")  # word2vec's header line
    model = tiny("bilstm-crf", word_vectors=str(vectors))
    config = model.config
    assert config.word_dim == 4 and config.word_vectors_sha256 == hashlib.sha256(vectors.read_bytes()).hexdigest()
    rows = {w: model.embedding.weight[i + 2].tolist() for i, w in enumerate(config.word_vocab)}
    assert rows["the"] == [1, 2, 3, 4] and rows["beach"] == rows["Beach"] == [0.5] * 4  # Beach: its lowercase form
    scale = math.sqrt(3 / 4)
    assert all(abs(v) <= scale for w in ("Rob", "nice", "0000") for v in rows[w])
    assert model.embedding.weight[PAD].abs().sum() == 0


def test_a_bad_vectors_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("the 1 2 3\nbeach 1 2\n")
    with pytest.raises(DataError, match=r"bad.txt:2: expected a word and 3 values, got 2 values"):
        read_vectors(bad, {"the"})
    with pytest.raises(DataError, match=r"bad.txt:2: expected a word and 3 values, got 2 values"):
        tiny("bilstm-crf", word_vectors=str(bad))  # fitting reads the dimension only; building reads every line
    with pytest.raises(DataError, match=r"missing.txt: no such word vectors file"):
        tiny("bilstm-crf", word_vectors=str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("3 4\n")  # a word2vec header and no vector
    with pytest.raises(DataError, match=r"empty.txt: no word vectors in it"):
        tiny("bilstm-crf", word_vectors=str(empty))
    good = tmp_path / "good.txt"
    good.write_text("the 1 2 3 4\n")
    config = fit_to_text(default_config("bilstm-crf", tags=MAFConfig.tiny().tags, word_vectors=str(good)), WORDS)
    good.write_text("the 4 3 2 1\n")  # changed after the run recorded it
    with pytest.raises(DataError, match=r"good.txt: sha256 \w+, but the run recorded \w+"):
        build_model(config)


@pytest.mark.parametrize("name", NAMES)
def test_padding_words_and_characters_change_nothing(name):
    """A tweet's emissions alone equal its emissions in a batch with longer tweets and longer words."""
    model = tiny(name).eval()
    batch = make_batch(model.config, batch=4, seed=2)
    wide = dict(batch, word_chars=torch.nn.functional.pad(batch["word_chars"], (0, 5)))
    inputs = {k: batch[k] for k in MODEL_KEYS}
    with torch.no_grad():
        together = model(**inputs).emissions
        assert torch.allclose(together, model(**{**inputs, "word_chars": wide["word_chars"]}).emissions, atol=1e-6)
        for i in range(4):
            n = int(batch["word_mask"][i].sum())
            alone = model(**{k: v[i:i + 1, :n] if v.dim() > 1 else v[i:i + 1] for k, v in inputs.items()}).emissions
            assert torch.allclose(alone[0], together[i, :n], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_a_words_characters_read_the_same_at_any_padded_width(name):
    """The batch's longest word (no padding after it) reads as it does with padding after it: the
    character CNN's padding embedding is zero, as the convolution's own zero padding (it was random
    before, so a word's features depended on the batch's longest word; NCRF++ compared in docs/model.md)."""
    model = tiny(name).eval()
    with torch.no_grad():
        for word in ("at", "Rob", "nice", "beach"):
            exact = model(word_chars=codes([word], width=len(word)), word_mask=torch.ones(1, 1)).emissions
            wider = model(word_chars=codes([word], width=9), word_mask=torch.ones(1, 1)).emissions
            assert torch.allclose(exact, wider, atol=1e-6), word


def test_each_recipe_is_its_papers():
    cnn, lstm, huang = (train_config(name, "paper") for name in ("cnn-bilstm-crf", "hbilstm-crf", "bilstm-crf"))
    assert (cnn.optimizer, cnn.lr, cnn.momentum, cnn.lr_decay, cnn.clip, cnn.batch_size, cnn.epochs) == \
        ("sgd", 0.015, 0.9, 0.05, 5.0, 10, 50)
    assert (lstm.optimizer, lstm.lr, lstm.clip, lstm.batch_size, lstm.epochs) == ("sgd", 0.005, 5.0, 1, 100)
    assert (huang.optimizer, huang.lr) == ("sgd", 0.1)
    config = default_config("cnn-bilstm-crf")
    assert (config.word_dim, config.char_dim, config.char_hidden, config.char_window, config.lstm_hidden,
            config.word_dropout, config.char_encoder) == (100, 30, 30, 3, 200, 0.5, "cnn")
    config = default_config("hbilstm-crf")
    assert (config.word_dim, config.char_dim, config.char_hidden, config.lstm_hidden, config.char_encoder) == \
        (100, 25, 25, 100, "lstm")


def test_sgd_decays_the_rate_per_epoch():
    from maf_core.optim import schedule_for

    factor = schedule_for(train_config("cnn-bilstm-crf", "paper"), 100, steps_per_epoch=10)
    assert [factor(s) for s in (0, 9, 10, 25)] == [1.0, 1.0, 1 / 1.05, 1 / 1.1]


def test_wrong_combinations_are_refused_in_one_line(sample_text, sample_store, tmp_path):
    common = ["train", "--features", str(sample_store), "--text", str(sample_text), "--out", str(tmp_path / "r")]
    cases = {
        ("--model", "hbilstm-crf", "--bert", "bert-base-cased"):
            "--model hbilstm-crf: --bert is not for HBiLSTM-CRF (options of MAF, UMT-BERT-CRF, MT-BERT-CRF, "
            "BERT-softmax, GVATT-BERT-CRF, AdaCAN-BERT-CRF); leave it out",
        ("--model", "bilstm-crf", "--bert-config", "tiny"): "--model bilstm-crf: --bert-config is not for BiLSTM-CRF",
        ("--word-vectors", str(tmp_path / "v.txt")):
            "--model maf: --word-vectors is not for MAF (options of BiLSTM-CRF, CNN-BiLSTM-CRF, HBiLSTM-CRF, "
            "GVATT-HBiLSTM-CRF, AdaCAN-CNN-BiLSTM-CRF); leave it out",
        ("--model", "cnn-bilstm-crf", "--no-matching"): "--model cnn-bilstm-crf: --no-matching is not for "
                                                        "CNN-BiLSTM-CRF (options of MAF)",
    }
    for flags, message in cases.items():
        result = CliRunner().invoke(maf, [*common, *flags])
        assert result.exit_code == 1 and message in result.output, (flags, result.output)
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def run(sample_text, sample_store, sample_dir, tmp_path_factory):
    """cnn-bilstm-crf trained 1 epoch through the CLI with a small vectors file of the corpus's words."""
    root = tmp_path_factory.mktemp("bilstm")
    train_words = sorted({w for tweet in load_split(sample_text, "train").words for w in tweet})[:40]
    vectors = root / "vectors.txt"
    vectors.write_text("".join(f"{w} {' '.join(str((i + j) % 7 / 10) for j in range(6))}\n"
                               for i, w in enumerate(train_words)))
    out = root / "run"
    result = CliRunner().invoke(maf, ["train", "--features", str(sample_store), "--text", str(sample_text), "--out",
                                      str(out), "--model", "cnn-bilstm-crf", "--word-vectors", str(vectors),
                                      "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--no-tensorboard"])
    assert result.exit_code == 0, result.output
    return out, vectors, result.output


def test_every_reader_reads_a_bilstm_run(run, tmp_path):
    out, vectors, output = run
    saved = json.loads((out / "config.json").read_text())
    model, training = saved["model"], saved["train"]
    assert model["architecture"] == "cnn-bilstm-crf" and model["word_dim"] == 6
    assert model["word_vectors_sha256"] == hashlib.sha256(vectors.read_bytes()).hexdigest()
    assert (training["optimizer"], training["lr"], training["momentum"], training["epochs"]) == ("sgd", 0.015, 0.9, 1)
    assert "best epoch 1" in output and "no --word-vectors" not in output
    rows = [json.loads(x) for x in (out / "predictions" / "test.jsonl").read_text().splitlines()]
    assert rows and all(r["match_prob"] is None for r in rows)
    evaluated = CliRunner().invoke(maf, ["evaluate", str(out), "--out", str(tmp_path / "eval")])
    assert evaluated.exit_code == 0, evaluated.output
    tweets = tmp_path / "tweets.jsonl"
    tweets.write_text(json.dumps({"id": "t1", "text": "Rob at the beach"}) + "\n")
    predicted = CliRunner().invoke(maf, ["predict", str(out), "--input", str(tweets), "--out",
                                         str(tmp_path / "pred.jsonl")])
    assert predicted.exit_code == 0, predicted.output
    record = json.loads((tmp_path / "pred.jsonl").read_text())
    assert record["match_prob"] is None and len(record["tags"]) == 4
    done = CliRunner().invoke(maf, ["report", str(out), "--out", str(tmp_path / "figures")])
    assert done.exit_code == 0, done.output
    again = load_model(out)
    assert type(again).__name__ == "CNNBiLSTMCRF" and again.config.word_vocab == model["word_vocab"]
    card = (out / "best" / "README.md").read_text()
    assert "| model | CNN-BiLSTM-CRF |" in card and "word vectors" in card


@pytest.mark.parametrize("name", ["bilstm-crf", "hbilstm-crf"])
def test_the_others_train_and_resume_as_an_uninterrupted_run(name, sample_text, sample_store, tmp_path, caplog):
    config = train_config(name, "paper", epochs=2, batch_size=16, seed=3, device="cpu", tensorboard=False)
    model = default_config(name, word_dim=8, lstm_hidden=6, char_dim=5, char_hidden=4)
    whole, resumed = whole_and_resumed(sample_store, sample_text, tmp_path, model, config)
    assert "word embeddings start random (no --word-vectors)" in caplog.text
    assert resumed == whole
    assert whole["encoder"] == "RANDOM-init word embeddings"


def test_text_tokenized_before_the_word_path_is_read_as_it_is(sample_text, sample_store):
    """The words come from the `words` column every tokenized text has (format 1): nothing to redo."""
    inputs = read_inputs(FeatureStore(sample_store), sample_text, default_config("bilstm-crf"),
                         train_config("bilstm-crf", "paper"))
    fitted = fit_to_inputs(default_config("bilstm-crf"), inputs)
    assert json.loads((sample_text / "meta.json").read_text())["format_version"] == 1
    assert fitted.word_vocab and fitted.tags == inputs.meta["tags"]
