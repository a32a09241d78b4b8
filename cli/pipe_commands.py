"""The commands of `maf-pipe` (the group: cli/pipe.py), the offline stages.

Each command turns its options into one library call and prints the result. Choices and
defaults are the library's own (the choice tuples, `ExtractConfig`, the functions'
parameters), read from there, never copied.
"""
from __future__ import annotations

import json

import click

from cli.common import default_of
from pipeline import extract, sample, tokenization, vocab
from pipeline.backbone import BACKBONES
from pipeline.extract_config import BN_STATS, DECODES, MISSING, PRECISIONS, ExtractConfig
from pipeline.images import TRANSFORMS
from pipeline.schemes import SCHEMES
from pipeline.store import FeatureStore


@click.command("make-sample")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--tweets", default=default_of(sample.make_sample, "tweets"), show_default=True,
              help="Number of tweets over the three splits (60/20/20).")
@click.option("--seed", default=default_of(sample.make_sample, "seed"), show_default=True,
              help="Random seed; the same seed writes the same files.")
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it is not empty.")
def make_sample(out_dir: str, tweets: int, seed: int, overwrite: bool) -> None:
    """Write a synthetic corpus in which the image decides some entity types.

    Output: OUT_DIR/{train,valid,test}.txt (CoNLL), OUT_DIR/images/<id>.jpg, and
    OUT_DIR/annotations.jsonl marking, per tweet, whether the image is matched or
    unrelated, whether its file is ok, missing or broken, and which entities only the
    image can decide. The recipe is explained in data/README.md.
    """
    summary = sample.make_sample(out_dir, tweets=tweets, seed=seed, overwrite=overwrite)
    splits = ", ".join(f"{split} {n}" for split, n in summary["splits"].items())
    click.echo(f"wrote {tweets} tweets to {summary['out_dir']} ({splits})")
    click.echo(f"  images: {json.dumps(summary['relation'])}; files: {json.dumps(summary['image_file'])}")
    click.echo(f"  entities: {summary['entities']}, of which image-decided: {summary['image_decided_entities']}")


@click.command("build-vocab")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write the tokenizer to (vocab.txt, tokenizer.json, ...).")
@click.option("--vocab-size", default=default_of(vocab.build_vocab, "vocab_size"), show_default=True,
              help="Largest vocabulary size, special tokens included.")
@click.option(
    "--lowercase/--cased",
    default=default_of(vocab.build_vocab, "lowercase"),
    show_default=True,
    help="Lower-case text (like bert-base-uncased) or keep case.",
)
@click.option("--kind", type=click.Choice(vocab.KINDS), default=default_of(vocab.build_vocab, "kind"),
              show_default=True,
              help="wordpiece (BERT's), bpe (byte-level BPE, RoBERTa's kind, with <s> </s>) or "
                   "unigram (SentencePiece-style, XLM-R's and DeBERTa-v3's kind).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it is not empty.")
def build_vocab(data_dir: str, out_dir: str, vocab_size: int, lowercase: bool, kind: str, overwrite: bool) -> None:
    """Train a tokenizer on the words of DATA_DIR (all splits, labels unused).

    Writes a fast tokenizer directory that `maf-pipe tokenize --tokenizer` and
    transformers' AutoTokenizer.from_pretrained load: the offline stand-in for a real
    encoder's tokenizer (bert-base-cased, roberta-large, xlm-roberta-large) in tests and
    the demo.
    """
    summary = vocab.build_vocab(data_dir, out_dir, vocab_size=vocab_size, lowercase=lowercase, overwrite=overwrite,
                                kind=kind)
    casing = "lower-cased" if lowercase else "cased"
    name = {"wordpiece": "WordPiece", "bpe": "byte-level BPE", "unigram": "Unigram"}[kind]
    click.echo(f"wrote a {summary['vocab_size']}-token {casing} {name} vocabulary "
               f"({summary['lines']} tweets) to {summary['out_dir']}")


@click.command("tokenize")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option(
    "--tokenizer",
    "tokenizer_name",
    required=True,
    help="A local tokenizer directory (from build-vocab, or a downloaded BERT) or a Hub name such as bert-base-cased.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for {train,valid,test}.arrow and meta.json.")
@click.option(
    "--max-length", default=default_of(tokenization.tokenize_corpus, "max_length"), show_default=True,
    help="Most word pieces per tweet, [CLS] and [SEP] included."
)
@click.option("--scheme", type=click.Choice(SCHEMES), default=default_of(tokenization.tokenize_corpus, "scheme"),
              show_default=True,
              help="Tag scheme of the training tags (tag_ids); source labels are kept as they are.")
def tokenize(data_dir: str, tokenizer_name: str, out_dir: str, max_length: int, scheme: str) -> None:
    """Tokenize the splits of DATA_DIR into Arrow files for training.

    Reads train.txt, valid.txt (or dev.txt) and test.txt, whichever exist, and writes
    OUT/<split>.arrow (one row per tweet: image_id, words, labels, input_ids,
    word_starts, tag_ids) and OUT/meta.json (tokenizer and its vocab sha256, scheme,
    tags, per split its source file's sha256 and counts, truncated tweets, words without
    a word piece). No word is dropped:
    a word with no piece gets [UNK]; tweets longer than --max-length are cut and listed.
    """
    meta = tokenization.tokenize_corpus(data_dir, tokenizer_name, out_dir, max_length=max_length, scheme=scheme)
    click.echo(tokenization.summary_table(meta))
    click.echo(f"wrote {', '.join(s + '.arrow' for s in meta['splits'])} and meta.json to {out_dir} "
               f"({scheme}, max {max_length} pieces, vocab {meta['tokenizer']['vocab_sha256'][:12]})")
    if meta["truncated"]:
        click.echo(f"  {len(meta['truncated'])} tweets were cut at {max_length} pieces; see meta.json 'truncated'")
    if meta["no_piece_words"]:
        click.echo(
            f"  {len(meta['no_piece_words'])} words had no word piece and became [UNK]; see meta.json 'no_piece_words'"
        )


@click.command("extract-images")
@click.argument("images_dir", type=click.Path(file_okay=False))
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="The feature store to write, e.g. store.h5."
)
@click.option("--ids-from", "ids_from", type=click.Path(file_okay=False),
              help="A CoNLL corpus directory: extract the IMGIDs of all its splits (each once). "
                   "Default: every image file in IMAGES_DIR.")
@click.option("--backbone", type=click.Choice(BACKBONES), default=default_of(ExtractConfig, "backbone"),
              show_default=True,
              help="torchvision ResNet; 18/34 give 512 channels, 50/101/152 give 2048.")
@click.option(
    "--weights",
    default=default_of(ExtractConfig, "weights"),
    show_default=True,
    help="imagenet (torchvision weights; needs the network or torch's cache), a .pth state dict "
    "(e.g. resnet152-b121ed2d.pth), or none (random init from --seed, each residual block starting as the "
    "identity: demo and tests only).",
)
@click.option("--transform", type=click.Choice(TRANSFORMS), default=default_of(ExtractConfig, "transform"),
              show_default=True,
              help="resize: 224x224 resize, as the paper. maf-crop: the released code's random 224 crop "
                   "and flip, seeded per image id.")
@click.option("--bn-stats", type=click.Choice(BN_STATS), default=default_of(ExtractConfig, "bn_stats"),
              show_default=True,
              help="BatchNorm statistics: those of the weights, or re-estimated on a sample of these images "
                   "(AdaBN; makes random-init backbones usable).")
@click.option("--bn-samples", default=default_of(ExtractConfig, "bn_samples"), show_default=True,
              help="Images sampled for --bn-stats dataset.")
@click.option("--missing", type=click.Choice(MISSING), default=default_of(ExtractConfig, "missing"), show_default=True,
              help="record: store missing/broken images as zeros with their status. fail: stop and list them.")
@click.option("--decode", type=click.Choice(DECODES), default=default_of(ExtractConfig, "decode"), show_default=True,
              help="full: every image decoded at full size. fast: JPEGs decoded at the smallest DCT scale that "
                   "still covers 224 pixels (several times faster on large photos, slightly other pixels). "
                   "device: JPEGs decoded in batches and resized on --device by torchvision (nvJPEG on CUDA; "
                   "pixels within one level of full on the CPU), PNG, GIF, CMYK, EXIF-rotated and broken files through "
                   "PIL as with full. fast and device are recorded in the fingerprint; --transform resize only.")
@click.option("--device", default=default_of(ExtractConfig, "device"), show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=default_of(ExtractConfig, "precision"),
              show_default=True,
              help="Forward precision; tf32 and bf16 need CUDA. Recorded in the fingerprint.")
@click.option("--channels-last/--no-channels-last", default=default_of(ExtractConfig, "channels_last"),
              show_default=True,
              help="channels_last memory format for the forward: faster on this CPU (1.15x, "
                   "benchmarks/cpu_forward.py) and on GPUs; features differ by rounding only, so stores made "
                   "either way are used together (with --bn-stats dataset the re-estimated statistics differ "
                   "slightly too, and a run tells those stores apart).")
@click.option("--batch-size", default=default_of(ExtractConfig, "batch_size"),
              show_default=True, help="Images per forward pass.")
@click.option("--shard-size", default=default_of(ExtractConfig, "shard_size"), show_default=True,
              help="Images per resumable shard (one task).")
@click.option("--workers", type=int, default=default_of(ExtractConfig, "workers"),
              help="Local Dask worker processes, one model each [default: on CPU 1 per 4 cores; on a GPU none: "
                   "in this process, with --decode-threads decoding]; 0 runs in this process without Dask.")
@click.option("--threads", type=int, default=default_of(ExtractConfig, "threads"),
              help="torch threads per worker [default: cores / workers].")
@click.option(
    "--decode-threads",
    type=int,
    default=default_of(ExtractConfig, "decode_threads"),
    help="Image decoding threads per worker [default: 1 on CPU, up to 16 on GPU].",
)
@click.option("--scheduler", default=default_of(ExtractConfig, "scheduler"),
              help="Address of a running Dask scheduler (tcp://host:8786): extract on its workers instead of a "
                   "local cluster. Workers need maf installed, no shared file system.")
@click.option("--seed", default=default_of(ExtractConfig, "seed"), show_default=True,
              help="Seed of random weights, maf-crop and the AdaBN sample.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing store made differently, or discard shards of a different unfinished run.")
def extract_images(images_dir: str, out: str, ids_from: str | None, overwrite: bool, **options) -> None:
    """Run the frozen ResNet once per image and write OUT (store.h5).

    Per image: 49 region vectors (layer4 pooled to 7x7, float16) and the pooled vector
    (float32), plus a status: ok, missing, empty, unreadable, too_large or bad_id. No
    image is ever replaced by another; broken ones are stored as zeros with their status.

    Work is done in shards under OUT.work/ beside OUT: an interrupted run picks up where
    it stopped when rerun with the same settings. OUT appears only when complete, with a
    fingerprint (backbone, weights hash, transform, BatchNorm mode, versions) that
    training checks. A complete store with the same fingerprint and ids is reused.
    """
    config = ExtractConfig(**options)  # where the work runs: extract.plan_workers decides
    ids = extract.ids_from_corpus(ids_from) if ids_from else None
    summary = extract.extract_images(images_dir, out, config, ids=ids, overwrite=overwrite)
    click.echo(extract.summary_text(summary))


@click.command("inspect")
@click.argument("store", type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help="Read every row and verify it (finite values, zeros exactly where not ok).")
def inspect(store: str, check: bool) -> None:
    """Show a feature store: fingerprint, shapes, dtypes, counts by status, size.

    The fingerprint says how the features were made (backbone, weights, transform, BatchNorm
    statistics); with --check every row is read and verified."""
    features = FeatureStore(store)
    click.echo(features.describe())
    if check:
        problems = features.check()
        for problem in problems[:20]:
            click.echo(f"  problem: {problem}")
        if problems:
            raise click.ClickException(f"{store}: {len(problems)} problems found")
        click.echo(f"  check: all {len(features)} rows read and verified")
