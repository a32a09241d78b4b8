"""The commands of `maf` (the group: cli/maf.py). Each turns its options into a config, makes one
library call and prints the result. Choices are the library's tuples; defaults are read with
`default_of` from the dataclass or function that uses them, never copied (tests/test_cli.py
compares --help with the library)."""
from __future__ import annotations

import json
import os
from dataclasses import replace

import click

from cli.common import SectionedCommand, default_of, load_config_file
from maf_core import distributed
from maf_core.config import BATCHINGS, BERT_SIZES, CHOICES, OPTIMIZERS, PRESETS, MAFConfig, TrainConfig, preset_of
from maf_core.images_seen import no_image_line
from maf_core.inference import evaluate_run
from maf_core.metrics import read_pair, score, table
from maf_core.models import ARCHITECTURES, config_from_options, model_class, train_config
from maf_core.online import features_source
from maf_core.predict import MAFPredictor, read_items, write_records
from maf_core.report import write_figures
from maf_core.seeds import summary_table, train_runs
from maf_core.serve.limits import DEVICE as SERVE_DEVICE
from maf_core.serve.limits import HOST as SERVE_HOST
from maf_core.serve.limits import PORT as SERVE_PORT
from maf_core.serve.limits import SPLIT as SERVE_SPLIT
from maf_core.serve.limits import Limits
from maf_core.table import PUBLISHED, build_table, markdown
from pipeline.errors import DataError
from pipeline.extract import ExtractConfig
from pipeline.images import TRANSFORMS

# train's --help, in sections (parameter names; the options keep their order on the command line)
TRAIN_SECTIONS = {
    "Data": ("features", "images_dir", "backbone", "weights", "transform", "text_dir"),
    "Model": ("architecture", "preset", "bert", "bert_config", "word_vectors", "swap", "matching_head", "ner_pairs",
              "pooling", "heads", "no_alignment", "no_matching", "text_only"),
    "Optimisation": ("epochs", "batch_size", "lr", "head_lr", "optimizer", "batching", "seed", "amp"),
    "Run": ("out_dir", "seeds", "resume", "device", "tensorboard", "log_every", "config", "help"),
}
WARMUP = f"{default_of(TrainConfig, 'warmup'):.0%}"  # of all steps, then linear decay to 0


def _per_preset(value_of) -> str:
    """'[default: the preset's: VALUE (presets), ...]', read from the presets themselves."""
    presets: dict[str, list[str]] = {}
    for name in PRESETS:
        presets.setdefault(str(value_of(name)), []).append(name)
    return "[default: the preset's: " + "; ".join(f"{v} ({', '.join(p)})" for v, p in presets.items()) + "]"


def _model_setting(name: str) -> str:
    return _per_preset(lambda preset: getattr(MAFConfig.from_preset(preset), name))


def _train_setting(name: str) -> str:
    return _per_preset(lambda preset: getattr(train_config(ARCHITECTURES[0], preset), name))


def _given() -> set[str]:
    """train's options set on the command line or in --config (not left at their defaults)."""
    ctx = click.get_current_context()
    return {name for name in ctx.params
            if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)}


def _model_config(architecture: str, **options) -> MAFConfig:
    """The model of --model from its options (maf_core.models.config_from_options); an option given
    that is another model's is a DataError naming it."""
    given = _given() | ({"bert_size"} if "bert_config" in _given() else set())
    return config_from_options(architecture, [name for name in options if name in given], **options)


def _seed_list(ctx: click.Context, param: click.Parameter, value) -> list[int] | None:
    """--seeds 1,2,3 (or a YAML list) as integers."""
    if not value:
        return None
    try:
        return [int(x) for x in (value.split(",") if isinstance(value, str) else value) if str(x).strip()]
    except (TypeError, ValueError):
        raise DataError(f"--seeds {value!r}: expected comma-separated integers such as 1,2,3") from None


@click.command("train", cls=SectionedCommand, sections=TRAIN_SECTIONS)
@click.option("--features", type=click.Path(dir_okay=False), help="store.h5 from maf-pipe extract-images.")
@click.option("--images", "images_dir", type=click.Path(file_okay=False),
              help="Instead of --features: run the frozen ResNet on these images in every step (the original "
                   "design, as a baseline; slow). With --backbone, --weights, --transform.")
@click.option("--backbone", default=default_of(ExtractConfig, "backbone"), show_default=True, help="With --images.")
@click.option("--weights", default=default_of(ExtractConfig, "weights"), show_default=True,
              help="With --images: imagenet, a .pth, or none.")
@click.option("--transform", type=click.Choice(TRANSFORMS), default=default_of(ExtractConfig, "transform"),
              show_default=True, help="With --images.")
@click.option(
    "--text", "text_dir", required=True, type=click.Path(file_okay=False), help="TEXT_DIR from maf-pipe tokenize."
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="The run directory to write.")
@click.option("--bert", default=None,
              help="The pretrained text encoder: a Hub name or a local directory, any Hugging Face encoder "
                   "(bert-base-cased, bert-large-cased, roberta-large, xlm-roberta-large, vinai/bertweet-base, "
                   "DeBERTa ...). The text must be tokenized with its tokenizer. d, CI's heads and widths follow "
                   "its config.")
@click.option("--bert-config", type=click.Choice(list(BERT_SIZES)), default=default_of(MAFConfig, "bert_size"),
              show_default=True,
              help="Without --bert: a RANDOM-init BERT of this size with the tokenizer's vocabulary (tests and "
                   "the offline demo; the run and its report say so).")
@click.option("--word-vectors", type=click.Path(dir_okay=False), default=None,
              help="The BiLSTM models' word embeddings: a GloVe or word2vec text file (its sha256 goes into the run); "
                   "the train split's words it lacks start U(±√(3/dim)). Without it every embedding starts random.")
@click.option("--model", "architecture", type=click.Choice(ARCHITECTURES), default=ARCHITECTURES[0],
              show_default=True,
              help="maf, or the baselines umt (UMT-BERT-CRF, Yu et al. 2020) and mt (MT-BERT-CRF: UMT without its "
                   "span detection), built and trained as their released code (BertAdam, random batches of 32; "
                   "--optimizer, --batching, --batch-size change it) on the same --features and --text; a text "
                   "tokenized BIO or BIOES; or bert-softmax (BERT + linear + softmax, no CRF, no image), trained "
                   "as UMT; or the word-level bilstm-crf (Huang et al. 2015), cnn-bilstm-crf (Ma & Hovy 2016) and "
                   "hbilstm-crf (Lample et al. 2016), each with its paper's recipe (SGD ...; --word-vectors); or "
                   "the multimodal gvatt-bert-crf and adacan-bert-crf (Lu et al. 2018, Zhang et al. 2018 on BERT, "
                   "trained as UMT) and gvatt-hbilstm-crf and adacan-cnn-bilstm-crf (on words). Every value: "
                   "docs/model.md.")
@click.option("--preset", type=click.Choice(PRESETS), default=preset_of(MAFConfig()), show_default=True,
              help="paper: MAF as the paper describes it. released-code: as the authors' code runs it "
                   "(its CI, CM, CRF over pieces, BertAdam, random batches). recommended: the paper with CM "
                   "negatives made from another tweet's image, a bilinear CM and tags learned on each "
                   "tweet's own image, the setting whose p tells related images from unrelated ones. "
                   "Every value: docs/model.md.")
@click.option("--epochs", default=default_of(TrainConfig, "epochs"), show_default=True,
              help="Passes over the training split (the paper: 24; a BiLSTM model: its recipe's).")
@click.option("--batch-size", type=int, default=None,
              help="Tweets per optimisation step, over all processes under torchrun [default: "
                   f"{default_of(TrainConfig, 'batch_size')}, the paper's; --model umt and mt: "
                   f"{train_config('umt', PRESETS[0]).batch_size}, their released code's].")
@click.option("--lr", default=default_of(TrainConfig, "lr"), show_default=True,
              help=f"AdamW learning rate ({WARMUP} warm-up, linear decay to 0) [a BiLSTM model: its recipe's, "
                   "for SGD].")
@click.option("--head-lr", type=float, default=default_of(TrainConfig, "head_lr"),
              help="Learning rate of everything after BERT (CA, CI, CM, CF, CRF) [default: --lr].")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None,
              help=f"adamw ({WARMUP} warm-up, linear decay to 0, global clipping) or bertadam (the released "
                   "code's: no bias correction, each tensor clipped, warmup_linear) " + _train_setting("optimizer")
                   + ".")
@click.option("--batching", type=click.Choice(BATCHINGS), default=None,
              help="Batches of similar-length tweets (less padding; rows in random order inside) or "
                   "random batches " + _train_setting("batching") + ".")
@click.option("--seed", default=default_of(TrainConfig, "seed"), show_default=True,
              help="Seeds the model's initialisation, batch order, dropout and CM negatives: same seed, same run.")
@click.option("--seeds", default=None, callback=_seed_list,
              help="Comma-separated seeds (1,2,3): one run per seed in OUT/seed-N, and OUT/summary.json with "
                   "mean and std.")
@click.option("--swap", type=click.Choice(CHOICES["swap"]), default=None,
              help="CM negatives: the other tweet's C (c, the paper's wording, which a linear CM cannot "
                   "separate, see docs/model.md) or C recomputed from this text and the other tweet's image "
                   + _model_setting("swap") + ".")
@click.option("--matching-head", type=click.Choice(CHOICES["matching_head"]), default=None,
              help="CM classifier: linear on flatten([T; C]) (the paper) or bilinear on mean T and mean C, "
                   "which needs --swap image " + _model_setting("matching_head") + ".")
@click.option("--ner-pairs", type=click.Choice(CHOICES["ner_pairs"]), default=None,
              help="In training, a tweet whose C was swapped learns its tags from p times the swapped C "
                   "(swapped) or from its own image (true) " + _model_setting("ner_pairs") + ".")
@click.option("--pooling", type=click.Choice(CHOICES["pooling"]), default=default_of(MAFConfig, "pooling"),
              show_default=True,
              help="T_s, the sentence vector CA aligns with the image: the encoder's tanh pooler (BERT, the "
                   "paper), the first token's state, or the mean of the pieces; auto: pooler for BERT, first for "
                   "RoBERTa, XLM-R, BERTweet and DeBERTa (whose pooler is untrained or absent).")
@click.option("--heads", type=int, default=None,
              help="CI's attention heads; must divide the encoder's width [default: the encoder's head count].")
@click.option("--no-alignment", is_flag=True, help="Ablation: without CA.")
@click.option("--no-matching", is_flag=True, help="Ablation: without CM.")
@click.option("--text-only", is_flag=True, help="The BERT-CRF baseline: no image information at all.")
@click.option("--device", default=default_of(TrainConfig, "device"), show_default=True,
              help="auto, cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=default_of(TrainConfig, "amp"),
              help="bf16 autocast [default: on with CUDA, but fp32 under the released-code preset and for --model "
                   "umt and mt; off on CPU].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--tensorboard/--no-tensorboard", default=default_of(TrainConfig, "tensorboard"), show_default=True,
              help="TensorBoard event files in OUT/tb/: losses and learning rates per step, dev P/R/F1 and "
                   "histograms of p per epoch (`tensorboard --logdir runs/`).")
@click.option("--log-every", default=default_of(TrainConfig, "log_every"), show_default=True,
              help="Seconds between progress lines when stderr is not a terminal (a live bar when it is).")
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=load_config_file,
              help="A YAML file of option values (keys as the long option names, e.g. batch-size: 32); "
                   "flags on the command line override it.")
def train(features, images_dir, backbone, weights, transform, text_dir, out_dir, bert, bert_config, word_vectors,
          architecture,
          preset, epochs,
          batch_size, lr, head_lr, optimizer, batching, seed, seeds, swap, matching_head, ner_pairs, pooling, heads,
          no_alignment,
          no_matching, text_only, device, amp, resume, tensorboard, log_every) -> None:
    """Train a model of the registry (--model: MAF or one of the paper's Table 2 baselines) on
    tokenized text, joined with image features for a model that reads images.

    First a summary of what will run (parameters by part, tweets with and without an image,
    device, precision, batches); then a live bar per epoch (log lines when not on a terminal).
    Every epoch: dev P/R/F1 (conlleval rules), best/ saved on improvement, last.pt for
    --resume, one line in metrics.jsonl, TensorBoard events in OUT/tb/. At the end: test scores
    of best/ in report.json, predictions/<split>.conll and .jsonl, and a table like the paper's
    Table 2.

    `--model NAME` trains another system on the same text and store, with its paper's recipe as
    defaults (docs/model.md); every reader of the run (evaluate, predict, report, table, serve,
    --resume) rebuilds the model it was trained as.

    Several GPUs: `torchrun --nproc_per_node N -m cli.maf train ...` (same flags). --batch-size
    stays the global batch, split over the processes; CA and CM draw negatives from all of it,
    so N processes train what one process would. The first process writes the run.
    """
    source = features_source(features, images_dir, ExtractConfig(backbone=backbone, weights=weights,
                                                                 transform=transform, seed=seed), device)
    model_config = _model_config(architecture, preset=preset, no_alignment=no_alignment, no_matching=no_matching,
                                 text_only=text_only, bert=bert, bert_size=bert_config, pooling=pooling, swap=swap,
                                 matching_head=matching_head, ner_pairs=ner_pairs, heads=heads,
                                 word_vectors=word_vectors)
    given = _given()  # --epochs and --lr left out: the model's recipe (TrainConfig's for MAF, UMT and BERT)
    config = train_config(architecture, preset, epochs=epochs if "epochs" in given else None,
                          batch_size=batch_size, lr=lr if "lr" in given else None, head_lr=head_lr, seed=seed,
                          device=device, amp=amp, optimizer=optimizer, batching=batching, tensorboard=tensorboard,
                          log_every=log_every)
    with distributed.session():
        result = train_runs(source, text_dir, out_dir, model_config, config, seeds, resume)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun the first process prints
        pieces = "pieces" in model_class(architecture).inputs
        random = (model_config.bert is None) if pieces else (model_config.word_vectors is None)
        _print_training(result, seeds, out_dir, random and ("no --bert" if pieces else "no --word-vectors"))


def _print_training(result: dict, seeds: list[int] | None, out_dir: str, random_encoder: str | bool) -> None:
    """The test table of one run (with its best epoch), or mean ± std over seeds."""
    for split in ("valid", "test"):
        if split in result:
            click.echo(summary_table(result, split) if seeds else table(result[split], split))
    if seeds:
        click.echo(f"{len(seeds)} runs and summary.json written to {out_dir}")
    else:
        click.echo(f"best epoch {result['best_epoch']}; run written to {out_dir}")
        if random_encoder:
            click.echo(f"note: the text encoder was {result['encoder']} ({random_encoder}): these scores say "
                       "nothing about a pretrained encoder")
    for note in result.get("notes", []):  # e.g. a model that reads images saw none (maf_core.images_seen)
        click.echo(f"note: {note}")


@click.command("evaluate")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--split", default=default_of(evaluate_run, "split"), show_default=True,
              help="train, valid or test of the text.")
@click.option("--features", type=click.Path(dir_okay=False), default=None,
              help="Another store.h5 [default: the run's]; extracted with the run's settings (same fingerprint).")
@click.option("--text", "text_dir", type=click.Path(file_okay=False), default=None,
              help="Other data from maf-pipe tokenize with the run's tokenizer [default: the run's text].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where predictions go [default: RUN_DIR/predictions, or RUN_DIR/predictions-<TEXT name> "
                   "with --text].")
@click.option("--batch-size", type=int, default=None,
              help="Tweets per forward [default: the run's own evaluation batch, "
                   f"{default_of(TrainConfig, 'eval_batch_size')} unless it was set].")
def evaluate(run_dir: str, split: str, features: str | None, text_dir: str | None, out_dir: str | None,
             batch_size: int | None) -> None:
    """Score RUN_DIR/best on a split, of the run's own data or of other tokenized data, and
    write its predictions (CoNLL and JSONL).

    The store and the text must belong to the run: same store fingerprint, same vocabulary
    and tag scheme; if they have moved since training, pass --features and --text."""
    scores, target = evaluate_run(run_dir, split, features, text_dir, out_dir, batch_size)
    click.echo(table(scores, split))
    click.echo(f"predictions written to {target}/{split}.conll and .jsonl")


@click.command("predict")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help='JSONL of {"id", "text" or "words", "image"} per line, or a CoNLL file.')
@click.option("--images", "images_dir", type=click.Path(file_okay=False),
              help="Images of the new tweets (<image>.jpg ...): extracted now with the run's backbone settings.")
@click.option("--features", type=click.Path(dir_okay=False), help="Or a store.h5 made with the run's fingerprint.")
@click.option("--weights", default=None, help="The backbone weights file, when the run's store was made with one.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Predictions, JSONL.")
def predict(run_dir, input_path, images_dir, features, weights, out_path) -> None:
    """Tag new tweets with RUN_DIR/best: entities with type, span and words, and p per tweet
    (null for a model without CM).

    Images come from a store made with the run's fingerprint (--features), or are extracted
    now from --images with the run's own backbone, transform and BatchNorm statistics, so
    new features match the ones the model was trained on."""
    predictor = MAFPredictor.from_pretrained(run_dir)
    records = predictor.predict(read_items(input_path), features=features, images_dir=images_dir, weights=weights)
    write_records(out_path, records)
    found = sum(len(r["entities"]) for r in records)
    click.echo(f"{len(records)} tweets, {found} entities -> {out_path}")
    cut = [r["untagged"] for r in records if r["untagged"]]
    if cut:
        click.echo(f"note: {len(cut)} of {len(records)} tweets are longer than the run's {predictor.max_length} "
                   f"pieces: their last {sum(cut)} words in all were not seen and are tagged O (\"untagged\" per "
                   "tweet)")
    no_image = no_image_line(predictor.model.config, input_path, len(records),
                             sum(r.get("image_status") == "ok" for r in records))
    if no_image:
        click.echo(f"note: {no_image}")


@click.command("score")
@click.argument("gold", type=click.Path(dir_okay=False))
@click.argument("pred", required=False, type=click.Path(dir_okay=False))
def score_cmd(gold: str, pred: str | None) -> None:
    """conlleval-style P/R/F1 per type and overall.

    GOLD and PRED: two CoNLL files (IMGID records, same tweets and words in order).
    GOLD alone: one file of `word gold predicted` columns, blank lines between sentences.
    """
    gold_tags, pred_tags = read_pair(gold, pred)
    scores = score(gold_tags, pred_tags)
    click.echo(table(scores, "score"))
    for name, values in sorted(scores["types"].items()):
        click.echo(f"  {name:<6} P {values['precision']:6.2f}  R {values['recall']:6.2f}  "
                   f"F1 {values['f1']:6.2f}  ({values['support']} gold)")


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the PNG files.")
@click.option("--case-run", type=click.Path(file_okay=False), default=None,
              help="The run whose attention the case study shows [default: the first run with images].")
@click.option("--ids", default=None, help="Comma-separated test tweet ids for the case study [default: chosen].")
@click.option("--count", default=default_of(write_figures, "count"), show_default=True,
              help="Tweets in the case study.")
@click.option("--images", "images_dir", type=click.Path(file_okay=False), default=None,
              help="The images of the case study [default: <corpus>/images, from the tokenized text].")
@click.option("--annotations", type=click.Path(dir_okay=False), default=None,
              help="JSONL saying which images are matched or unrelated [default: <corpus>/annotations.jsonl, "
                   "as the sample corpus has].")
@click.option("--features", type=click.Path(dir_okay=False), default=None,
              help="The runs' store.h5, if it has moved since training [default: the path the run recorded].")
@click.option("--text", "text_dir", type=click.Path(file_okay=False), default=None,
              help="The runs' tokenized text, if it has moved since training [default: the path the run recorded].")
def report(run_dirs, out_dir, case_run, ids, count, images_dir, annotations, features, text_dir) -> None:
    """PNG figures of finished runs (a --seeds folder counts as all its seeds): training curves,
    F1 per type side by side, histograms of the match probability p, and a case study of CI
    attention over the image for each predicted entity."""
    written = write_figures(list(run_dirs), out_dir, case_run, [i.strip() for i in ids.split(",")] if ids else None,
                           count, images_dir, annotations, features, text_dir)
    click.echo(written["corpus"].read_text(encoding="utf-8"))
    if "comparison" in written:
        click.echo(written["comparison"].read_text(encoding="utf-8"))
    for name, path in written.items():
        click.echo(f"{name:<11} {path}")


@click.command("table")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--paper", type=click.Choice(tuple(PUBLISHED)), default=None,
              help="Put the paper's published row (its Table 2, this corpus) under each system's; a system "
                   "with no row there is listed as such.")
@click.option("--annotations", type=click.Path(dir_okay=False), default=None,
              help="JSONL of the entities only the image decides, for the image-decided and other F1 columns "
                   "[default: <corpus>/annotations.jsonl, as the sample corpus has; without it, no such columns].")
@click.option("--mixed-corpora", is_flag=True,
              help="Lay out runs trained on different versions of the corpus (another sha256 of a split's "
                   "source file) instead of refusing; the table says so in bold.")
@click.option("--json", "as_json", is_flag=True, help="The table as JSON (every seed's value too) instead of "
                                                      "Markdown.")
def table_cmd(run_dirs, paper, annotations, mixed_corpora, as_json) -> None:
    """Finished runs as the paper's Table 2, in Markdown: test F1 for PER, LOC, ORG and MISC, then
    P, R and F1, one row per run (a --seeds folder: mean ± std over its seeds), plus image-decided
    and other F1 where the corpus has annotations.

    Each row is named by its model (MAF, MAF without CM, UMT-BERT-CRF ...); below the table,
    each run's model and seeds, and the corpus it was trained on (each split's source sha256 and counts). Runs
    trained on different versions of the corpus are refused, naming them and the splits that
    differ."""
    result = build_table(list(run_dirs), paper, annotations, mixed_corpora)
    click.echo(json.dumps(result, indent=2) if as_json else markdown(result))


SERVE_LIMITS = Limits()  # `maf serve`'s defaults, read from the library


@click.command("serve")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--images", "images_dir", type=click.Path(file_okay=False), default=None,
              help="The split's images, shown beside the tweets [default: <corpus>/images, from the tokenized text].")
@click.option("--split", default=SERVE_SPLIT, show_default=True,
              help="The split to browse; RUN_DIR/predictions/<split>.jsonl must exist (maf evaluate writes it).")
@click.option("--compare", type=click.Path(file_okay=False), default=None,
              help="A second run of the same text (e.g. the text-only baseline), side by side, with filters for "
                   "the tweets where the image helped or hurt; Try tags with it too.")
@click.option("--host", default=SERVE_HOST, show_default=True,
              help="Address to listen on; anything but loopback lets others use the model (a warning says so), "
                   "with the token printed in the address.")
@click.option("--port", default=SERVE_PORT, show_default=True, help="Port to listen on.")
@click.option("--allow-host", "allow_hosts", multiple=True,
              help="A Host name to answer besides loopback's (a name this machine is reached by); repeatable.")
@click.option("--features", type=click.Path(dir_okay=False), default=None,
              help="The run's store.h5, if it has moved since training [default: the path the run recorded].")
@click.option("--text", "text_dir", type=click.Path(file_okay=False), default=None,
              help="The run's tokenized text, if it has moved since training [default: the path the run recorded].")
@click.option("--max-upload-mb", default=SERVE_LIMITS.max_upload_bytes / 2**20, show_default=True,
              help="Largest request body and image, in MiB; more gets 413.")
@click.option("--max-text", default=SERVE_LIMITS.max_text_chars, show_default=True,
              help="Longest tweet in characters; more gets 422.")
@click.option("--max-image-pixels", default=SERVE_LIMITS.max_image_pixels, show_default=True,
              help="Largest image, in pixels (read from its header, before decoding); more gets 422.")
@click.option("--device", default=SERVE_DEVICE, show_default=True, help="auto, cpu, cuda or cuda:N.")
def serve_cmd(run_dir, images_dir, split, compare, host, port, allow_hosts, features, text_dir, max_upload_mb,
              max_text, max_image_pixels, device) -> None:
    """A local web page to browse RUN_DIR's predictions with their images and try new tweets,
    and a JSON API (POST /api/predict, documented at /docs).

    Browse: every tweet of the split with its image, gold and predicted entities coloured by
    type, each error marked, p, filters, P/R/F1 per type, and CI's attention per entity.
    Try: a tweet and an image of your own, extracted with the run's backbone settings.
    Serves until Ctrl-C. Nothing on the page is fetched from outside this machine, and only
    this machine's pages may call it (Host, Origin and, off loopback, a token)."""
    from maf_core.serve import build, serve

    limits = replace(SERVE_LIMITS, max_upload_bytes=int(max_upload_mb * 2**20), max_text_chars=max_text,
                     max_image_pixels=max_image_pixels)
    app = build(run_dir, split, compare, images_dir, features, text_dir, limits, device)
    serve(app, host, port, allow_hosts, announce=click.echo)
