"""What the click groups share: expected input errors become one line, not a traceback; --config
FILE.yaml as a command's defaults; options read their defaults from the library (`default_of`);
--help in sections (`SectionedCommand`); logging."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import os
from typing import Any, Callable

import click
import yaml

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


class LazyGroup(Group):
    """A group whose commands live in another module, imported only when a command runs or shows
    its --help (click's lazy subcommands): `maf --help` lists the commands without loading torch.

    `commands_module`: where the commands are; `summaries`: each command's first paragraph, which
    the group's --help shortens as click does (tests/test_cli.py checks it against the command)."""

    def __init__(self, *args, commands_module: str, summaries: dict[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.commands_module, self.summaries = commands_module, summaries

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.summaries)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.summaries:
            return None
        module = importlib.import_module(self.commands_module)
        return next(c for c in vars(module).values() if isinstance(c, click.Command) and c.name == name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(map(len, self.summaries))
        # a bare command of the same text shortens it as click shortens the real one
        rows = [(name, click.Command(name, help=text).get_short_help_str(limit))
                for name, text in sorted(self.summaries.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def default_of(owner: type | Callable, name: str) -> Any:
    """The default the library gives `name`: a field of a dataclass (`TrainConfig`, `ExtractConfig`)
    or a parameter of the function a command calls. Every option takes its default this way, so
    that what --help shows is what the library does."""
    if dataclasses.is_dataclass(owner):
        field = next(f for f in dataclasses.fields(owner) if f.name == name)
        return field.default if field.default is not dataclasses.MISSING else field.default_factory()
    default = inspect.signature(owner).parameters[name].default
    assert default is not inspect.Parameter.empty, f"{owner.__name__}: {name} has no default"
    return default


class SectionedCommand(click.Command):
    """A command whose --help lists its options in sections: `sections` maps a title to the
    parameter names it shows, in order (the options' own order, on the command line, is kept;
    "help" is --help). Options in no section are listed last, under "Other options"."""

    def __init__(self, *args, sections: dict[str, tuple[str, ...]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sections = sections

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        help_option = self.get_help_option(ctx)
        records = {"help" if p is help_option else p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        records = {name: record for name, record in records.items() if record is not None}
        for title, names in [*self.sections.items(), ("Other options", tuple(records))]:
            rows = [records.pop(name) for name in names if name in records]
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def setup_logging(verbose: bool) -> None:
    """INFO (DEBUG with -v) on stderr; under torchrun only the first process logs below WARNING."""
    quiet = int(os.environ.get("RANK", "0")) > 0
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def load_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--config FILE.yaml: its keys become this command's defaults; flags given still win."""
    if value is None:
        return value
    try:
        with open(value, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle) or {}
    except OSError as err:
        raise click.BadParameter(f"{value}: {err.strerror}", ctx, param) from None
    except yaml.YAMLError as err:
        raise click.BadParameter(f"{value}: not valid YAML ({err})", ctx, param) from None
    if not isinstance(loaded, dict):
        raise click.BadParameter(f"{value}: expected a mapping of option names to values", ctx, param)
    names = {}  # long option name (text, batch-size) -> parameter name (text_dir, batch_size)
    for option in ctx.command.params:
        if option.name != "config":
            for flag in option.opts:
                if flag.startswith("--") and not flag.startswith("--no-"):
                    names[flag[2:]] = option.name
    unknown = sorted(str(k) for k in loaded if str(k).replace("_", "-") not in names)
    if unknown:
        raise DataError(f"{value}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    values = {names[str(k).replace("_", "-")]: v for k, v in loaded.items()}
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value
