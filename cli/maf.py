"""`maf`: train, evaluate, apply and score MAF and its baselines, and draw reports of runs.

The group only: its commands are in cli/maf_commands.py, loaded when one runs (or shows its
--help), so that `maf --help` answers at once. Several GPUs:
`torchrun --nproc_per_node N -m cli.maf train ...`.
"""
from __future__ import annotations

import click

from cli.common import LazyGroup, setup_logging

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
SUMMARIES = {  # each command's first paragraph (tests/test_cli.py checks them against the commands)
    "train": "Train a model of the registry (--model: MAF or one of the paper's Table 2 baselines) on tokenized "
             "text, joined with image features for a model that reads images.",
    "evaluate": "Score RUN_DIR/best on a split, of the run's own data or of other tokenized data, and write its "
                "predictions (CoNLL and JSONL).",
    "predict": "Tag new tweets with RUN_DIR/best: entities with type, span and words, and p per tweet (null for a "
               "model without CM).",
    "score": "conlleval-style P/R/F1 per type and overall.",
    "report": "PNG figures of finished runs (a --seeds folder counts as all its seeds): training curves, F1 per "
              "type side by side, histograms of the match probability p, and a case study of CI attention over "
              "the image for each predicted entity.",
    "table": "Finished runs as the paper's Table 2, in Markdown: test F1 for PER, LOC, ORG and MISC, then P, R "
             "and F1, one row per run (a --seeds folder: mean ± std over its seeds), plus image-decided and other "
             "F1 where the corpus has annotations.",
    "serve": "A local web page to browse RUN_DIR's predictions with their images and try new tweets, and a JSON "
             "API (POST /api/predict, documented at /docs).",
}


@click.group(cls=LazyGroup, commands_module="cli.maf_commands", summaries=SUMMARIES, context_settings=CONTEXT)
@click.version_option(package_name="maf", prog_name="maf", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="Log debugging detail.")
def main(verbose: bool) -> None:
    """Train, evaluate and apply models for multimodal NER on tweets with images: MAF and the
    systems of its paper's Table 2.

    Inputs come from `maf-pipe`: tokenized text (maf-pipe tokenize) and cached image
    features (store.h5, maf-pipe extract-images). Commands: train, evaluate, predict,
    score, report, table, serve.
    """
    setup_logging(verbose)


if __name__ == "__main__":  # torchrun --nproc_per_node N -m cli.maf train ...
    main()
