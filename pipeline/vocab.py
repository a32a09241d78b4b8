"""An offline WordPiece vocabulary trained on the corpus words.

No machine here reaches a model hub, so tests and the demo need a tokenizer built
locally: `build_vocab` trains one with the `tokenizers` library and writes a directory
that `transformers.AutoTokenizer.from_pretrained(dir)` loads as a BERT fast tokenizer
(vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json), the same
layout as `bert-base-cased`. With real weights, pass `bert-base-cased` or a local BERT
directory to `maf-pipe tokenize --tokenizer` instead.
"""
from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Iterator

from pipeline.conll import find_splits, iter_conll
from pipeline.errors import DataError
from pipeline.files import atomic_directory, refuse_non_empty

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _corpus_lines(data_dir: Path) -> Iterator[str]:
    # All splits' words, labels unused: a stand-in for the much larger text a real BERT
    # vocabulary was trained on, so that test words are not all [UNK].
    for path in find_splits(data_dir).values():
        for tweet in iter_conll(path):
            yield " ".join(tweet.words)


def build_vocab(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    vocab_size: int = 8000,
    lowercase: bool = False,
    min_frequency: int = 1,
    overwrite: bool = False,
) -> dict:
    """Train a WordPiece vocabulary on the corpus of DATA_DIR and save a BERT fast tokenizer.

    Returns a small summary: the output directory, vocabulary size and casing.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise DataError(f"--vocab-size {vocab_size} is too small (at least {len(SPECIAL_TOKENS) + 1})")
    refuse_non_empty(out_dir, overwrite)
    lines = list(_corpus_lines(data_dir))  # validates every split before anything is written

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # the same normaliser and pre-tokeniser BertTokenizerFast rebuilds from do_lower_case
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # The trainer creates continuation tokens (##c) in hash-map order, and merge ties are
    # broken by token id, so the same corpus can give a different vocabulary each run
    # (huggingface/tokenizers#1794). Declaring every ##c up front, sorted, fixes their ids
    # and makes training deterministic; they would all be in the vocabulary anyway.
    continuation = sorted(
        {char for line in lines for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(
            tokenizer.normalizer.normalize_str(line)) for char in word[1:]}
    )
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS + [f"##{char}" for char in continuation],
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])

    with atomic_directory(out_dir) as tmp:
        vocab_file = tmp / "vocab.txt"
        vocab_file.write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
        options = dict(do_lower_case=lowercase, strip_accents=None, model_max_length=512)
        if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
            fast = BertTokenizerFast(vocab=dict(vocab), **options)
        else:
            fast = BertTokenizerFast(vocab_file=str(vocab_file), **options)
        fast.save_pretrained(str(tmp))
    logger.debug("wrote a %d-token WordPiece vocabulary to %s", len(vocab), out_dir)
    return {"out_dir": str(out_dir), "vocab_size": len(vocab), "lowercase": lowercase, "lines": len(lines)}
