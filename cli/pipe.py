"""`maf-pipe`: the offline stages (sample corpus, vocabulary, tokenization, image features).

The group only: its commands are in cli/pipe_commands.py, loaded when one runs (or shows its
--help), so that `maf-pipe --help` answers at once.
"""
from __future__ import annotations

import click

from cli.common import LazyGroup, setup_logging

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
SUMMARIES = {  # each command's first paragraph (tests/test_cli.py checks them against the commands)
    "make-sample": "Write a synthetic corpus in which the image decides some entity types.",
    "build-vocab": "Train a tokenizer on the words of DATA_DIR (all splits, labels unused).",
    "tokenize": "Tokenize the splits of DATA_DIR into Arrow files for training.",
    "extract-images": "Run the frozen ResNet once per image and write OUT (store.h5).",
    "inspect": "Show a feature store: fingerprint, shapes, dtypes, counts by status, size.",
}


@click.group(cls=LazyGroup, commands_module="cli.pipe_commands", summaries=SUMMARIES, context_settings=CONTEXT)
@click.version_option(package_name="maf", prog_name="maf-pipe", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
def main(verbose: bool) -> None:
    """Offline stages of maf: make a sample corpus, build a vocabulary, tokenize a
    CoNLL corpus to Arrow, extract image features once into store.h5, inspect a store.

    A corpus directory holds train.txt, valid.txt (or dev.txt) and test.txt in the
    UMT/MAF CoNLL format: an IMGID:<id> line, one token<TAB>label line per word, a
    blank line. See `maf-pipe COMMAND --help`.
    """
    setup_logging(verbose)


if __name__ == "__main__":
    main()
