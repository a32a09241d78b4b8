"""A run directory: what `maf train` writes, and what evaluate, predict, report and --resume read.

    RUN/config.json        {"model": the MAFConfig, "text_dir", "features", "tokenizer", "max_length",
                            "corpus": each split's source sha256 and counts, "store_fingerprint",
                            "train": the TrainConfig}
    RUN/metrics.jsonl      one line per epoch (losses, dev P/R/F1, learning rate, seconds)
    RUN/best/              config.json + model.safetensors: the best epoch's model (maf_core.models.load_model:
                           the from_pretrained of the class its config names)
    RUN/last.pt            model, optimizer, schedule, RNG and progress: what --resume continues from
    RUN/backbone_bn.npz    the store's re-estimated BatchNorm statistics, when it has them
    RUN/tokenizer/         a copy of the tokenizer the text was cut with
    RUN/report.json        best/ scored on dev and test
    RUN/predictions/       <split>.conll and <split>.jsonl

`RunDirectory` is the one place that knows these names and checks that data, stores and
tokenizers belong to the run (docs/design.md, "Run directory"): `check_text` for tokenized text,
`check_fingerprint` for image features (resume, new images, and every store opened with
`open_store`: evaluate, predict, report, serve).
"""
from __future__ import annotations

import json
import logging
import shutil
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import ModelCard, ModelCardData

from maf_core.checkpoint import load_pickled_state, weights_file
from maf_core.config import MAFConfig
from maf_core.encoder import describe as describe_encoder
from maf_core.models import describe, load_model, model_card
from pipeline.errors import DataError
from pipeline.files import atomic_output
from pipeline.fingerprint import store_differences
from pipeline.store import FeatureStore
from pipeline.tokenization import load_tokenizer, vocab_sha256

logger = logging.getLogger(__name__)


def check_vocabulary(found: dict, expected: dict, found_in: str, expected_in: str, fix: str) -> None:
    """DataError unless two tokenizer records ({"name_or_path", "vocab_sha256"}) share a vocabulary.

    `found_in` names the text (or tokenizer) checked, `expected_in` what it must match."""
    if found["vocab_sha256"] != expected["vocab_sha256"]:
        raise DataError(f"{found_in}: tokenized with {found['name_or_path']} (vocab sha256 "
                        f"{found['vocab_sha256'][:12]}), but {expected_in} has vocab sha256 "
                        f"{expected['vocab_sha256'][:12]}; {fix}")


def _same_pieces(tokenizer, copy: Path, words: list[str]) -> bool:
    texts = [" ".join(words[i:i + 20]) for i in range(0, min(len(words), 4000), 20)] or ["probe"]
    try:
        again = load_tokenizer(copy)
    except DataError:
        return False
    return tokenizer(texts)["input_ids"] == again(texts)["input_ids"]


def _card_images(report: dict) -> tuple[list[tuple[str, str]], list[str]]:
    """The model card's row of readable images per split (report.json's "images"), and its notes
    (a model that reads images but saw none) as paragraphs."""
    seen = report.get("images")
    rows = []
    if seen:
        rows.append(("readable images", ", ".join(
            f"{name} {c['readable']} of {c['tweets']}" + (f" ({100 * c['share']:.1f}%)" if c["tweets"] else "")
            for name, c in seen.items())))
    return rows, [line for note in report.get("notes", []) for line in (f"**Note:** {note}.", "")]


class RunDirectory:
    CONFIG, METRICS, BEST, LAST = "config.json", "metrics.jsonl", "best", "last.pt"
    BN, REPORT, PREDICTIONS, TOKENIZER = "backbone_bn.npz", "report.json", "predictions", "tokenizer"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def open(cls, path: str | Path) -> "RunDirectory":
        """A finished run: RUN itself, or its best/ (DataError unless config.json and best/ are there)."""
        path = Path(path)
        if path.name == cls.BEST and (path.parent / cls.CONFIG).is_file():
            path = path.parent
        run = cls(path)
        if not run.file(cls.CONFIG).is_file() or weights_file(run.best) is None:
            raise DataError(f"{path}: not a finished run directory (config.json and best/model.safetensors "
                            "expected)")
        return run

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def best(self) -> Path:
        return self.path / self.BEST

    @property
    def last(self) -> Path:
        return self.path / self.LAST

    def predictions(self, text_dir: str | Path | None = None) -> Path:
        """predictions/ for the run's own data; predictions-<name>/ for other tokenized data."""
        return self.path / (self.PREDICTIONS if text_dir is None else f"{self.PREDICTIONS}-{Path(text_dir).name}")

    def is_empty(self) -> bool:
        return not self.path.exists() or not any(self.path.iterdir())

    # -- what config.json records ------------------------------------------------------------

    @cached_property
    def record(self) -> dict:
        try:
            return json.loads(self.file(self.CONFIG).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{self.file(self.CONFIG)}: unreadable ({err})") from None

    @property
    def model_config(self) -> MAFConfig:
        return MAFConfig.from_dict(self.record["model"])

    def start(self, model_config: MAFConfig, record: dict, bn_stats: dict | None) -> None:
        """config.json, and the store's re-estimated BatchNorm statistics (so that `maf predict
        --images` extracts new images with the same backbone)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.file(self.CONFIG)) as handle:
            json.dump({"model": model_config.to_dict(), **record}, handle, indent=2, sort_keys=True)
        self.__dict__.pop("record", None)
        if bn_stats is not None:
            with atomic_output(self.file(self.BN), "wb") as handle:
                np.savez(handle, **bn_stats)

    def bn_buffers(self) -> dict:
        path = self.file(self.BN)
        if not path.is_file():
            raise DataError(f"{path}: missing; the run's BatchNorm statistics are needed to extract new images")
        with np.load(path) as data:
            return {k: data[k] for k in data.files}

    # -- what the run needs besides itself ---------------------------------------------------

    def save_tokenizer(self, name_or_path: str, vocab: str, probe: list[str]) -> None:
        """A copy of the tokenizer in RUN/tokenizer/, so that the run predicts from any working
        directory and after being copied elsewhere. The copy must cut `probe` (words of the
        training text) into the same pieces; a tokenizer that cannot be copied faithfully, or
        loaded now (a Hub name not in the cache), is left out with a warning: predicting then
        needs it where it was."""
        try:
            tokenizer = load_tokenizer(name_or_path)
        except DataError as err:
            logger.warning("the run gets no copy of its tokenizer: %s", err)
            return
        if vocab_sha256(tokenizer) != vocab:
            logger.warning("%s: its vocabulary changed since the text was tokenized; the run gets no copy of it",
                           name_or_path)
            return
        target = self.file(self.TOKENIZER)
        tokenizer.save_pretrained(str(target))
        source = Path(name_or_path)
        if not _same_pieces(tokenizer, target, probe) and source.is_dir():
            # some tokenizers do not save what they load (BERTweet's drops its merge counts in
            # transformers 5): their own files instead
            for name in getattr(tokenizer, "vocab_files_names", {}).values():
                if (source / name).is_file():
                    shutil.copy(source / name, target / name)
        if not _same_pieces(tokenizer, target, probe):
            shutil.rmtree(target)
            logger.warning("%s: a saved copy of this tokenizer cuts words differently; the run keeps no copy, "
                           "and predicting needs the tokenizer where it is now", name_or_path)

    def load_tokenizer(self):
        """The run's own copy of its tokenizer (runs before that copy existed: where config.json
        says it was), checked against the vocabulary the run was trained with."""
        saved = self.record["tokenizer"]
        own = self.file(self.TOKENIZER)
        source = str(own) if own.is_dir() else saved["name_or_path"]
        tokenizer = load_tokenizer(source)
        found = {"name_or_path": source, "vocab_sha256": vocab_sha256(tokenizer)}
        check_vocabulary(found, saved, source, f"the run {self.path}",
                         "the tokenizer changed after the run was trained")
        return tokenizer

    def data(self, key: str, given: str | Path | None = None) -> Path:
        """The run's store (`key` "features") or text directory ("text_dir"), or `given` in its place;
        a DataError that says which option to pass when the recorded one has moved."""
        if given is not None:
            return Path(given)
        path = Path(self.record[key])
        if not path.exists():
            what, option = {"features": ("store", "--features"), "text_dir": ("text", "--text")}[key]
            raise DataError(f"{path}: the {what} {self.path} was trained on is not there any more; "
                            f"pass {option} with where it is now")
        return path

    def open_store(self, given: str | Path | None = None, fix: str = "") -> FeatureStore:
        """The run's store, or `given` in its place (a store moved or extracted again), checked to
        belong to the run (`check_fingerprint`): what evaluate, predict, report and serve read."""
        store = FeatureStore(self.data("features", given))
        self.check_fingerprint(store.fingerprint, str(store.path), fix)
        return store

    # -- checks: does this data belong to the run? -------------------------------------------

    def check_text(self, meta: dict, text_dir: str | Path) -> None:
        """Text from `maf-pipe tokenize` must share the run's vocabulary and tag scheme."""
        check_vocabulary(meta["tokenizer"], self.record["tokenizer"], str(text_dir),
                         f"the run {self.path} (tokenizer {self.record['tokenizer']['name_or_path']})",
                         "tokenize it again with --tokenizer set to the run's")
        scheme = self.record["model"]["scheme"]
        if meta["scheme"] != scheme:
            raise DataError(f"{text_dir}: tokenized with tag scheme {meta['scheme']!r}, the run uses {scheme!r}")

    def check_fingerprint(self, fingerprint: dict, what: str, fix: str = "") -> None:
        """The one check that image features belong to the run: `fingerprint` (of a store given
        to resume, evaluate or predict, or of new images extracted now) must agree with the run's
        store's in every field that decides the features (`pipeline.fingerprint.store_differences`).
        DataError naming `what`, the run and each differing field; `fix` says what to do instead."""
        changed = store_differences(fingerprint, self.record["store_fingerprint"], what)
        if changed:
            raise DataError(f"{what}: does not belong to the run {self.path}: extracted with other settings than "
                            f"the store it was trained on ({self.record['features']}): {changed} "
                            f"('there' = {what}, 'now' = the run's store)" + (f"; {fix}" if fix else ""))

    # -- what training writes ----------------------------------------------------------------

    def append_metrics(self, line: dict) -> None:
        with open(self.file(self.METRICS), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")

    def metrics(self) -> list[dict]:
        text = self.file(self.METRICS).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def save_last(self, state: dict) -> None:
        with atomic_output(self.last, "wb") as handle:
            torch.save(state, handle)

    def load_last(self) -> dict:
        if not self.last.is_file():
            raise DataError(f"{self.path}: no last.pt to resume from")
        return load_pickled_state(self.last)

    def save_best(self, model) -> None:
        model.save_pretrained(self.best)

    def load_best(self, device="cpu"):
        """best/ as the model the run was trained as (the class its config names)."""
        return load_model(self.best, device)

    def write_report(self, report: dict) -> None:
        with atomic_output(self.file(self.REPORT)) as handle:
            json.dump(report, handle, indent=2, sort_keys=True)

    def write_model_card(self, report: dict) -> None:
        """best/README.md, the model card: its model's (MAF's, UMT's ...), then what this run is (model,
        encoder, tag scheme, the store's fingerprint) and best/'s scores, so that the folder says what it holds when
        pushed to the Hub (`MAF.from_pretrained(RUN).push_to_hub(...)`)."""
        config, store = self.model_config, self.record["store_fingerprint"]
        bn = store["bn_stats"]
        features = (f"{store['backbone']}, weights {store['weights']['identity']}, transform "
                    f"{store['transform']['name']}, BatchNorm {bn['mode']}"
                    + (f" (sha256 {bn['sha256'][:12]})" if bn.get("sha256") else "")
                    + f", {store['precision']}, decode {store.get('decode', 'full')}")
        images, notes = _card_images(report)
        rows = [("model", describe(config)), ("text encoder", describe_encoder(config)), ("tag scheme", config.scheme),
                ("image features", features), *images, ("best epoch", str(report["best_epoch"]))]
        lines = ["", "## This run", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "", *notes,
                 "## Scores (entity level, conlleval's rules)", "", "| split | P | R | F1 |", "|---|---|---|---|"]
        for split in ("valid", "test"):
            if split in report:
                o = report[split]["overall"]
                lines.append(f"| {split} | {o['precision']:.2f} | {o['recall']:.2f} | {o['f1']:.2f} |")
        template, tags = model_card(config)
        card = ModelCard.from_template(ModelCardData(library_name="maf", tags=tags), template_str=template)
        with atomic_output(self.best / "README.md") as handle:
            handle.write(str(card).rstrip() + "\n" + "\n".join(lines) + "\n")

    def read_report(self) -> dict | None:
        path = self.file(self.REPORT)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
