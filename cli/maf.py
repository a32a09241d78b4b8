"""`maf`: train, evaluate and apply MAF (the commands arrive with the trainer stage)."""
from __future__ import annotations

import click

from cli.common import Group, setup_logging

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=Group, context_settings=CONTEXT)
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
def main(verbose: bool) -> None:
    """Train, evaluate and apply MAF for multimodal NER on tweets with images.

    Inputs come from `maf-pipe`: tokenized text (maf-pipe tokenize) and cached image
    features (store.h5, maf-pipe extract-images). Commands: train, evaluate, predict,
    score, report (added as the trainer stage lands).
    """
    setup_logging(verbose)
