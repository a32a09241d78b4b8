"""What a training run reads (the tokenized text and the store), checked against each other, against
the model's scheme and vocabulary, and, for --resume, against the run being continued."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from maf_core.config import DISPLAY_ONLY, MAFConfig, TrainConfig
from maf_core.data import Split, check_ids_in_store, load_split
from maf_core.models import fit_to_text, model_class
from maf_core.run import RunDirectory, check_vocabulary
from pipeline.errors import DataError
from pipeline.store import FeatureSource
from pipeline.tokenization import corpus_differences, corpus_identity, load_tokenizer, read_meta, vocab_sha256


@dataclass
class Inputs:
    """What a run reads: the text's meta.json and splits, the store, and the record config.json keeps of them."""

    meta: dict
    store: FeatureSource
    splits: dict[str, Split]
    record: dict  # text_dir, features, tokenizer, corpus, max_length, store_fingerprint, train


def read_inputs(features: FeatureSource, text_dir: str | Path, model_config: MAFConfig,
                config: TrainConfig) -> Inputs:
    """The tokenized text and the store, checked against each other and against the model's
    scheme and vocabulary (DataError naming what differs)."""
    text_dir = Path(text_dir)
    meta = read_meta(text_dir)
    if not model_class(model_config.architecture).takes_text_scheme and model_config.scheme != meta["scheme"]:
        raise DataError(f"{text_dir}: tokenized with tag scheme {meta['scheme']!r}, but the model expects "
                        f"{model_config.scheme!r}; run `maf-pipe tokenize --scheme {model_config.scheme}` "
                        "or pick the matching preset")
    if model_config.bert is not None:  # the BERT's own vocabulary must be the one the text was cut with
        found = {"name_or_path": model_config.bert, "vocab_sha256": vocab_sha256(load_tokenizer(model_config.bert))}
        check_vocabulary(meta["tokenizer"], found, str(text_dir), f"--bert {model_config.bert}",
                         f"tokenize again with --tokenizer {model_config.bert}")
    record = {"text_dir": str(text_dir.resolve()), "features": str(Path(features.path).resolve()),
              "tokenizer": meta["tokenizer"], "corpus": corpus_identity(meta), "max_length": int(meta["max_length"]),
              "store_fingerprint": features.fingerprint, "train": asdict(config)}
    splits = {name: load_split(text_dir, name) for name in ("train", "valid", "test") if name in meta["splits"]}
    if "train" not in splits or "valid" not in splits:
        raise DataError(f"{text_dir}: needs train and valid splits, found {sorted(splits)}")
    for split in splits.values():
        check_ids_in_store(split, features, text_dir)
    return Inputs(meta, features, splits, record)


def fit_to_inputs(model_config: MAFConfig, inputs: Inputs) -> MAFConfig:
    """A copy of the model config with the text's tags, vocabulary and length and the store's sizes
    (and the text's tag scheme for a model that takes it: UMT and MT, BIO as their released code, or BIOES)."""
    meta, store = inputs.meta, inputs.store
    scheme = meta["scheme"] if model_class(model_config.architecture).takes_text_scheme else model_config.scheme
    model_config = fit_to_text(model_config, inputs.splits["train"].words)  # the word-level models' vocabularies
    return replace(model_config, scheme=scheme, tags=list(meta["tags"]),
                   vocab_size=int(meta["tokenizer"]["vocab_size"]),
                   pad_token_id=int(meta["tokenizer"].get("pad_id") or 0),
                   image_dim=int(store.channels), num_regions=int(store.num_regions),
                   max_length=max(model_config.max_length, int(meta["max_length"])))


def check_resume(run: RunDirectory, record: dict, architecture: str) -> tuple[dict, MAFConfig]:
    """last.pt and the run's model config, if this model (`architecture`, the --model given), text,
    store and training settings are the run's own."""
    state = run.load_last()
    saved = run.record
    trained_as = run.model_config.architecture  # MAFConfig's default where config.json names none
    if architecture != trained_as:
        raise DataError(f"{run.path}: was trained with --model {trained_as}; resume it with --model {trained_as}, "
                        f"not {architecture}")
    run.check_fingerprint(record["store_fingerprint"], record["features"], "resume with the run's store")
    check_vocabulary(record["tokenizer"], saved["tokenizer"], record["text_dir"],
                     f"the run {run.path} (tokenizer {saved['tokenizer']['name_or_path']})",
                     "resume with the text the run was started on")
    changed = corpus_differences(record["corpus"], saved.get("corpus"))  # runs before: not recorded
    if changed:
        raise DataError(f"{record['text_dir']}: cut from another version of the corpus than the run {run.path} "
                        f"was started on ({', '.join(changed)} differ); resume with the text the run was started on")
    started = {**asdict(TrainConfig()), **saved["train"]}  # settings added later: their defaults
    if {k: v for k, v in started.items() if k not in DISPLAY_ONLY} != \
            {k: v for k, v in record["train"].items() if k not in DISPLAY_ONLY}:
        raise DataError(
            f"{run.path}: was started with other training settings {saved['train']}; resume with the same ones"
        )
    return state, run.model_config
