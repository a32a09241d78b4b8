"""Does the image help where only the image can decide? The presets, ablations and text-only on the sample corpus.

Builds the sample corpus (make-sample, build-vocab, tokenize in BIOES and in BIO for the
released-code preset, extract-images with a random ResNet and AdaBN statistics), trains
each chosen config for each seed (by default the three presets, the paper without CM,
text-only, and the baselines UMT-BERT-CRF and MT-BERT-CRF as their released code sets them,
on the BIO text), and scores the test split three ways:
- overall entity F1 (conlleval rules);
- image-decided entities (annotations.jsonl): F1 over their spans, and recall of the exact
  span and type;
- all other entities: F1 with image-decided spans left out on both sides;
and p (the match probability) for tweets with a matched vs an unrelated image: the mean of
each group and the AUC. The final line is JSON; a markdown table is printed before it.

    .venv/bin/python benchmarks/sample_experiment.py [--tweets 1200] [--seeds 1,2,3] [--epochs 12]
        [--configs "paper,released-code,recommended,w/o CM,text only,umt,mt"]
        [--encoder-family bert|roberta|xlm-roberta|deberta-v2|bertweet]

--encoder-family trains on a random-init encoder of that architecture (256 wide, 4 layers,
4 heads) with a tokenizer of its family trained on the corpus, loaded through --bert as a
downloaded model would be: it shows the whole path works for each family, it does not
compare them (no pretraining).

Training follows the demo's recipe (the Makefile's DEMO_TRAIN: 12 epochs, batches of 32, one
learning rate of 3e-4 for BERT and the heads); a test keeps the two equal.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from statistics import mean, pstdev

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> (preset, ablation, other MAFConfig values). The released code swaps its last 16 rows
# only in batches of more than 16 (k does not scale with the batch): at a batch of 16 its CM
# would never see a negative, so that row trains with batches of at least 32.
RELEASED_BATCH = 32
CONFIGS = {
    "paper": ("paper", {}, {}),
    "released-code": ("released-code", {}, {}),
    "recommended": ("recommended", {}, {}),
    "w/o CA": ("paper", {"no_alignment": True}, {}),
    "w/o CM": ("paper", {"no_matching": True}, {}),
    "w/o CA+CM": ("paper", {"no_alignment": True, "no_matching": True}, {}),
    "text only": ("paper", {"text_only": True}, {}),
    "paper ner-true": ("paper", {}, {"ner_pairs": "true"}),
    "paper swap-image": ("paper", {}, {"swap": "image"}),
    "recommended ner-swapped": ("recommended", {}, {"ner_pairs": "swapped"}),
    # the baselines (maf_core/umt.py): the preset slot names the architecture
    "umt": ("umt", {}, {}),
    "mt": ("mt", {}, {}),
}
BASELINES = ("umt", "mt")
DEFAULT = "paper,released-code,recommended,w/o CM,text only,umt,mt"
# family -> (model_type, build-vocab kind; bertweet: its own slow tokenizer kind)
FAMILIES = {"bert": ("bert", "wordpiece"), "roberta": ("roberta", "bpe"), "xlm-roberta": ("xlm-roberta", "unigram"),
            "deberta-v2": ("deberta-v2", "unigram"), "bertweet": ("roberta", "bertweet")}


def prepare_encoder(root: Path, data: Path, family: str) -> tuple[Path, Path, Path]:
    """(encoder directory, BIOES text, BIO text) for a random-init encoder of the family."""
    from maf_core.encoder import save_random_encoder
    from pipeline.tokenization import tokenize_corpus
    from pipeline.vocab import build_vocab

    model_type, kind = FAMILIES[family]
    encoder, text, text_bio = root / f"encoder-{family}", root / f"text-{family}", root / f"text-{family}-bio"
    if not (encoder / "config.json").is_file():
        if kind == "bertweet":
            from pipeline.conll import find_splits, iter_conll
            from tests.helpers import build_bertweet_style_tokenizer

            words = [w for path in find_splits(data).values() for t in iter_conll(path) for w in t.words]
            build_bertweet_style_tokenizer(words, encoder)
        else:
            build_vocab(data, encoder, vocab_size=4000, kind=kind)
        save_random_encoder(encoder, encoder, model_type, width=256, layers=4, heads=4)
    if not (text / "meta.json").is_file():
        tokenize_corpus(data, str(encoder), text)
    if not (text_bio / "meta.json").is_file():
        tokenize_corpus(data, str(encoder), text_bio, scheme="bio")
    return encoder, text, text_bio


def prepare(root: Path, tweets: int, backbone: str) -> dict:
    from pipeline.extract import ExtractConfig, extract_images, ids_from_corpus
    from pipeline.sample import make_sample
    from pipeline.tokenization import tokenize_corpus
    from pipeline.vocab import build_vocab

    data, tok, text, store = root / "data", root / "tokenizer", root / "text", root / "store.h5"
    if not (data / "train.txt").is_file():
        make_sample(data, tweets=tweets, seed=0)
    if not (tok / "vocab.txt").is_file():
        build_vocab(data, tok, vocab_size=4000)
    if not (text / "meta.json").is_file():
        tokenize_corpus(data, str(tok), text)
    if not (root / "text-bio" / "meta.json").is_file():
        tokenize_corpus(data, str(tok), root / "text-bio", scheme="bio")
    if not store.is_file():
        extract_images(data / "images", store, ExtractConfig(backbone=backbone, weights="none", bn_stats="dataset",
                                                             bn_samples=256, workers=0), ids=ids_from_corpus(data))
    return {"data": data, "text": text, "text-bio": root / "text-bio", "store": store}


def analyse(run: Path, annotations: dict) -> dict:
    from maf_core.metrics import image_decided_scores
    from maf_core.report import load_runs

    finished = load_runs([run])[0]
    return image_decided_scores(finished.predictions, annotations, finished.report, finished.has_matching)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=None, help="default: benchmarks/.sample-experiment-<tweets>")
    parser.add_argument("--tweets", type=int, default=1200)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--bert-config", default="small", choices=["tiny", "small"])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=12, help="[12, as the demo]")
    parser.add_argument("--batch-size", type=int, default=32, help="[32, as the demo]")
    parser.add_argument("--lr", type=float, default=3e-4, help="[3e-4, as the demo]")
    parser.add_argument("--head-lr", type=float, default=None, help="learning rate after BERT (default: --lr)")
    parser.add_argument("--configs", default=DEFAULT, help="which of: " + ", ".join(CONFIGS))
    parser.add_argument("--encoder-family", default=None, choices=list(FAMILIES),
                        help="a random-init encoder of this family through --bert [default: BERT of --bert-config]")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    from maf_core.config import MAFConfig
    from maf_core.metrics import read_annotations
    from maf_core.models import default_config, train_config
    from maf_core.train import train
    from pipeline.store import FeatureStore

    root = Path(args.dir or f"benchmarks/.sample-experiment-{args.tweets}")
    paths = prepare(root, args.tweets, args.backbone)
    encoder = None
    if args.encoder_family:
        encoder, paths["text"], paths["text-bio"] = prepare_encoder(root, paths["data"], args.encoder_family)
    annotations = read_annotations(paths["data"] / "annotations.jsonl")
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[dict]] = {}
    started = time.perf_counter()
    chosen = [c.strip() for c in args.configs.split(",")]

    def config_for(name):
        preset, ablation, values = CONFIGS[name]
        if preset in BASELINES:
            return default_config(preset, bert_size=args.bert_config, bert=str(encoder) if encoder else None)
        return replace(MAFConfig.from_preset(preset, bert_size=args.bert_config,
                                             bert=str(encoder) if encoder else None).with_ablation(**ablation),
                       **values)

    for name in chosen:
        for seed in seeds:
            runs = root / "runs" / (args.encoder_family or "")
            run = runs / name.replace("/", "").replace(" ", "-").replace("+", "-") / f"seed-{seed}"
            if not (run / "report.json").is_file():
                if run.exists():
                    import shutil

                    shutil.rmtree(run)
                config = config_for(name)
                text = paths["text-bio" if config.scheme == "bio" else "text"]
                batch = max(args.batch_size, RELEASED_BATCH) if config.negatives == "tail" else args.batch_size
                preset = CONFIGS[name][0]
                train(FeatureStore(paths["store"]), text, run, config,
                      train_config(config.architecture, "paper" if preset in BASELINES else preset,
                                   epochs=args.epochs, batch_size=batch,
                                   lr=args.lr, head_lr=args.head_lr, seed=seed, device="cpu"))
            results.setdefault(name, []).append(analyse(run, annotations))
    keys = ["f1", "image_decided_f1", "image_decided_recall", "other_f1", "p_matched", "p_unrelated", "p_auc"]
    summary = {name: {k: {"mean": mean(r[k] for r in runs), "std": pstdev(r[k] for r in runs)}
                      for k in keys if all(r[k] is not None for r in runs)} for name, runs in results.items()}
    print("| config | test F1 | image-decided F1 | image-decided recall | other F1 | p matched | p unrelated | p AUC |")
    print("|---|---|---|---|---|---|---|---|")
    for name, values in summary.items():
        cells = [f"{values[k]['mean']:.2f} ± {values[k]['std']:.2f}" if k in values else "–" for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(json.dumps({"benchmark": "sample_experiment", "tweets": args.tweets, "backbone": args.backbone,
                      "bert": args.bert_config, "encoder_family": args.encoder_family, "epochs": args.epochs,
                      "seeds": seeds,
                      "image_decided_entities": next(iter(results.values()))[0]["image_decided_entities"],
                      "minutes": round((time.perf_counter() - started) / 60, 1), "summary": summary}))


if __name__ == "__main__":
    main()
