"""What the click groups share: expected input errors become one line, not a traceback."""
from __future__ import annotations

import logging
import os

import click

from pipeline.errors import DataError


class Group(click.Group):
    """A click group whose commands print a `DataError` (or an OSError such as a permission
    denied) as `Error: <message>` and exit 1, without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DataError as err:
            raise click.ClickException(str(err)) from None
        except OSError as err:  # unwritable output, a full disk, a path that is not a directory
            raise click.ClickException(str(err)) from None


def setup_logging(verbose: bool) -> None:
    """INFO (DEBUG with -v) on stderr; under torchrun only the first process logs below WARNING."""
    quiet = int(os.environ.get("RANK", "0")) > 0
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
