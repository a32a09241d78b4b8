"""`maf-pipe`: the offline stages (sample corpus, vocabulary, tokenization)."""
from __future__ import annotations

import json

import click

from cli.common import Group, setup_logging
from pipeline import sample, tokenization, vocab
from pipeline.schemes import SCHEMES

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=Group, context_settings=CONTEXT)
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
def main(verbose: bool) -> None:
    """Offline stages of maf: make a sample corpus, build a vocabulary, tokenize a
    CoNLL corpus to Arrow (and, in later stages, extract image features to store.h5).

    A corpus directory holds train.txt, valid.txt (or dev.txt) and test.txt in the
    UMT/MAF CoNLL format: an IMGID:<id> line, one token<TAB>label line per word, a
    blank line. See `maf-pipe COMMAND --help`.
    """
    setup_logging(verbose)


@main.command("make-sample")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--tweets", default=1200, show_default=True, help="Number of tweets over the three splits (60/20/20).")
@click.option("--seed", default=0, show_default=True, help="Random seed; the same seed writes the same files.")
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


@main.command("build-vocab")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write the tokenizer to (vocab.txt, tokenizer.json, ...).")
@click.option("--vocab-size", default=8000, show_default=True, help="Largest vocabulary size, special tokens included.")
@click.option("--lowercase/--cased", default=False, show_default=True, help="Lower-case text (like bert-base-uncased) or keep case.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it is not empty.")
def build_vocab(data_dir: str, out_dir: str, vocab_size: int, lowercase: bool, overwrite: bool) -> None:
    """Train a WordPiece vocabulary on the words of DATA_DIR (all splits, labels unused).

    Writes a BERT fast tokenizer directory that `maf-pipe tokenize --tokenizer` and
    transformers' AutoTokenizer.from_pretrained load: the offline stand-in for
    bert-base-cased in tests and the demo.
    """
    summary = vocab.build_vocab(data_dir, out_dir, vocab_size=vocab_size, lowercase=lowercase, overwrite=overwrite)
    casing = "lower-cased" if lowercase else "cased"
    click.echo(f"wrote a {summary['vocab_size']}-token {casing} WordPiece vocabulary "
               f"({summary['lines']} tweets) to {summary['out_dir']}")


@main.command("tokenize")
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--tokenizer", "tokenizer_name", required=True,
              help="A local tokenizer directory (from build-vocab, or a downloaded BERT) or a Hub name such as bert-base-cased.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for {train,valid,test}.arrow and meta.json.")
@click.option("--max-length", default=128, show_default=True, help="Most word pieces per tweet, [CLS] and [SEP] included.")
@click.option("--scheme", type=click.Choice(SCHEMES), default="bioes", show_default=True,
              help="Tag scheme of the training tags (tag_ids); source labels are kept as they are.")
def tokenize(data_dir: str, tokenizer_name: str, out_dir: str, max_length: int, scheme: str) -> None:
    """Tokenize the splits of DATA_DIR into Arrow files for training.

    Reads train.txt, valid.txt (or dev.txt) and test.txt, whichever exist, and writes
    OUT/<split>.arrow (one row per tweet: image_id, words, labels, input_ids,
    word_starts, tag_ids) and OUT/meta.json (tokenizer and its vocab sha256, scheme,
    tags, counts, truncated tweets, words without a word piece). No word is dropped:
    a word with no piece gets [UNK]; tweets longer than --max-length are cut and listed.
    """
    meta = tokenization.tokenize_corpus(data_dir, tokenizer_name, out_dir, max_length=max_length, scheme=scheme)
    click.echo(tokenization.summary_table(meta))
    click.echo(f"wrote {', '.join(s + '.arrow' for s in meta['splits'])} and meta.json to {out_dir} "
               f"({scheme}, max {max_length} pieces, vocab {meta['tokenizer']['vocab_sha256'][:12]})")
    if meta["truncated"]:
        click.echo(f"  {len(meta['truncated'])} tweets were cut at {max_length} pieces; see meta.json 'truncated'")
    if meta["no_piece_words"]:
        click.echo(f"  {len(meta['no_piece_words'])} words had no word piece and became [UNK]; see meta.json 'no_piece_words'")
