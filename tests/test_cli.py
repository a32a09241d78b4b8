from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from helpers import write_text

from cli import maf, pipe
from maf_core.config import PRESETS, MAFConfig, TrainConfig, preset_of
from maf_core.models import default_config, train_config, uses_amp
from pipeline.extract_config import ExtractConfig

BIN = Path(sys.executable).parent
# Both command-line programs by their console-script names, and every command of each, read
# from the click groups: a new command is covered without editing this list.
GROUPS = {"maf-pipe": pipe.main, "maf": maf.main}
COMMANDS = [(program, name) for program, group in GROUPS.items() for name in group.list_commands(click.Context(group))]


def command(program: str, name: str) -> click.Command:
    group = GROUPS[program]
    return group.get_command(click.Context(group), name)


def run(group, *args) -> Result:
    return CliRunner().invoke(group.main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("words", [[program] for program in GROUPS] + [list(command) for command in COMMANDS],
                         ids=" ".join)
def test_every_command_answers_help(words):
    program, *command = words
    result = CliRunner().invoke(GROUPS[program], [*command, "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "Usage:" in result.output


@pytest.mark.parametrize("program, name", COMMANDS, ids=" ".join)
def test_every_command_says_what_it_does(program, name):
    assert len(command(program, name).help) > 150


@pytest.mark.parametrize("program, name", COMMANDS, ids=" ".join)
def test_every_option_is_explained(program, name):
    options = [p for p in command(program, name).params if isinstance(p, click.Option) and p.name != "help"]
    assert [p.opts[0] for p in options if not p.help] == []


@pytest.mark.parametrize("program, name", COMMANDS, ids=" ".join)
def test_the_group_lists_each_command_with_its_own_summary(program, name):
    """The groups list their commands without importing them: the summary they show is the command's."""
    for limit in (45, 60, 200):
        summary = click.Command(name, help=GROUPS[program].summaries[name])
        assert summary.get_short_help_str(limit) == command(program, name).get_short_help_str(limit)


@pytest.mark.parametrize("program", sorted(GROUPS))
def test_the_groups_answer_help_without_loading_torch(program):
    module = {"maf": "cli.maf", "maf-pipe": "cli.pipe"}[program]
    script = (f"import sys; from {module} import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
              "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Commands:" in proc.stdout


def test_maf_group_has_help():
    result = run(maf, "--help")
    assert result.exit_code == 0 and "Train, evaluate and apply models for multimodal NER" in result.output


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory) -> dict:
    """make-sample -> build-vocab -> tokenize through the CLI, once: each step's result and the text dir."""
    root = tmp_path_factory.mktemp("cli")
    data, tok, text = root / "data", root / "tok", root / "text"
    return {
        "make-sample": run(pipe, "make-sample", data, "--tweets", 60, "--seed", 2),
        "build-vocab": run(pipe, "build-vocab", data, "--out", tok, "--vocab-size", 300),
        "tokenize": run(pipe, "tokenize", data, "--tokenizer", tok, "--out", text, "--max-length", 32,
                        "--scheme", "bio"),
        "text": text,
    }


@pytest.mark.parametrize("step", ["make-sample", "build-vocab", "tokenize"])
def test_each_pipeline_step_succeeds(pipeline_run, step):
    assert pipeline_run[step].exit_code == 0, pipeline_run[step].output


def test_make_sample_reports_tweets_and_image_decided_entities(pipeline_run):
    output = pipeline_run["make-sample"].output
    assert "wrote 60 tweets" in output and "image-decided" in output


def test_build_vocab_reports_a_cased_wordpiece_vocabulary(pipeline_run):
    assert "cased WordPiece vocabulary" in pipeline_run["build-vocab"].output


def test_tokenize_table_has_a_column_per_count(pipeline_run):
    header = pipeline_run["tokenize"].output.splitlines()[0]
    assert header.split() == ["split", "tweets", "words", "PER", "LOC", "ORG", "MISC", "truncated", "no-piece",
                              "sha256"]


def test_tokenize_table_has_a_row_per_split(pipeline_run):
    rows = pipeline_run["tokenize"].output.splitlines()[2:5]
    assert [line.split()[0] for line in rows] == ["train", "valid", "test"]


def test_tokenize_table_counts_the_tweets_of_a_split(pipeline_run):
    train_row = pipeline_run["tokenize"].output.splitlines()[2]
    assert train_row.split()[1] == "36"  # 60% of 60


def test_tokenize_options_are_recorded_in_meta(pipeline_run):
    meta = json.loads((pipeline_run["text"] / "meta.json").read_text(encoding="utf-8"))
    assert meta["scheme"] == "bio" and meta["max_length"] == 32


@pytest.mark.parametrize(
    "content, message",
    [
        ("hello\tO\n\n", "train.txt:1: expected an 'IMGID:<id>' line"),
        ("IMGID:1\nhello O\n\n", "train.txt:2: expected 'token<TAB>label'"),
        ("IMGID:1\nhello\tO\tO\n\n", "train.txt:2: expected 2 tab-separated columns"),
        ("IMGID:1\nhello\tB-FOO\n\n", "train.txt:2: unknown label 'B-FOO'"),
        ("IMGID:1\n\tO\n\n", "train.txt:2: empty token"),
        ("IMGID:1\na\tO\n\nIMGID:1\nb\tO\n\n", "train.txt:4: duplicate IMGID:1"),
        ("\n", "train.txt: no record found"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, tokenizer_dir, content, message):
    write_text(tmp_path / "data" / "train.txt", content)
    for args in (["tokenize", tmp_path / "data", "--tokenizer", tokenizer_dir, "--out", tmp_path / "text"],
                 ["build-vocab", tmp_path / "data", "--out", tmp_path / "tok"]):
        result = CliRunner().invoke(pipe.main, [str(a) for a in args])
        assert result.exit_code == 1
        assert isinstance(result.exception, SystemExit)
        assert result.output.startswith("Error: ") and message in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "text").exists() and not (tmp_path / "tok").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["tokenize", "{tmp}/nowhere", "--tokenizer", "{tokenizer}", "--out", "{tmp}/t"], "no such directory"),
        (["tokenize", "{sample}", "--tokenizer", "{tmp}/nope", "--out", "{tmp}/t"],
         "nope: no such tokenizer directory"),
        (["make-sample", "{sample}"], "pass --overwrite"),
    ],
    ids=["missing-data-dir", "missing-tokenizer", "non-empty-output"],
)
def test_other_user_mistakes_are_clear(tmp_path, sample_dir, tokenizer_dir, args, message):
    paths = {"tmp": tmp_path, "sample": sample_dir, "tokenizer": tokenizer_dir}
    result = CliRunner().invoke(pipe.main, [arg.format(**paths) for arg in args])
    assert result.exit_code == 1 and message in result.output


def test_installed_console_script_prints_no_traceback(tmp_path, tokenizer_dir):
    write_text(tmp_path / "data" / "test.txt", "IMGID:5\nRob\tB-PERSON\n\n")
    proc = subprocess.run(
        [str(BIN / "maf-pipe"), "tokenize", str(tmp_path / "data"), "--tokenizer", str(tokenizer_dir),
         "--out", str(tmp_path / "text")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    assert "test.txt:2: unknown label 'B-PERSON'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_maf_version_is_the_package_version():
    from importlib.metadata import version

    result = CliRunner().invoke(maf.main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"maf {version('maf')}"


def test_installed_maf_script_answers_help():
    proc = subprocess.run([str(BIN / "maf"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Usage: maf" in proc.stdout


def test_unwritable_output_is_an_error_not_a_traceback(tmp_path, sample_dir, tokenizer_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(pipe.main, ["tokenize", str(sample_dir), "--tokenizer", str(tokenizer_dir),
                                            "--out", str(blocker / "text")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and str(blocker) in result.output
    assert "Traceback" not in result.output


def test_cli_reference_page_matches_help():
    from cli.reference import PAGE, current, reference

    assert current(PAGE.read_text(encoding="utf-8")) == reference(), \
        "docs/cli.md's CLI reference is stale: run .venv/bin/python -m cli.reference --write"


def test_maf_pipe_version_is_the_package_version():
    from importlib.metadata import version

    result = run(pipe, "--version")
    assert result.exit_code == 0 and result.output.strip() == f"maf-pipe {version('maf')}"


def _shown_defaults(name: str) -> dict[str, str]:
    """`maf NAME --help`, unwrapped: each option's first flag -> what its [default: ...] says."""
    sub = maf.main.get_command(click.Context(maf.main), name)
    with click.Context(sub, info_name=name, terminal_width=10_000, max_content_width=10_000) as ctx:
        text = sub.get_help(ctx)
    entries: dict[str, str] = {}  # an option's line, and the line of its help where the flags were too long
    option = None
    for line in text.splitlines():
        starts = re.match(r"  (-[-\w]+)", line)
        option = starts.group(1) if starts else option if line.startswith("   ") else None
        if option:
            entries[option] = entries.get(option, "") + line
    return {option: found.group(1) for option, entry in entries.items()
            if (found := re.search(r"\[default: (.*)\]", entry))}


def _per_preset(config_of, field: str) -> dict[str, str]:
    return {preset: str(getattr(config_of(preset), field)) for preset in PRESETS}


def _preset_defaults(shown: str) -> dict[str, str]:
    """"the preset's: c (paper, released-code); image (recommended)" -> {preset: value}."""
    assert shown.startswith("the preset's: "), shown
    pairs = re.findall(r"(\S+) \(([^)]*)\)", shown[len("the preset's: "):])
    return {preset: value for value, presets in pairs for preset in presets.split(", ")}


def test_train_help_shows_the_library_s_defaults():
    train, extract, model = TrainConfig(), ExtractConfig(), MAFConfig()
    shown = _shown_defaults("train")
    by_preset = {"--swap": "swap", "--matching-head": "matching_head", "--ner-pairs": "ner_pairs"}
    by_train_preset = {"--optimizer": "optimizer", "--batching": "batching"}
    for option, field in by_preset.items():
        assert _preset_defaults(shown.pop(option)) == _per_preset(MAFConfig.from_preset, field)
    for option, field in by_train_preset.items():
        assert _preset_defaults(shown.pop(option)) == _per_preset(lambda preset: train_config("maf", preset), field)
    assert shown == {
        "--backbone": extract.backbone, "--weights": extract.weights, "--transform": extract.transform,
        "--bert-config": model.bert_size, "--model": model.architecture, "--preset": preset_of(model),
        "--epochs": str(train.epochs), "--lr": str(train.lr), "--head-lr": "--lr", "--seed": str(train.seed),
        "--batch-size": f"{train.batch_size}, the paper's; --model umt and mt: "
                        f"{train_config('umt', 'paper').batch_size}, their released code's",
        "--pooling": model.pooling, "--device": train.device, "--log-every": str(train.log_every),
        "--tensorboard": "tensorboard" if train.tensorboard else "no-tensorboard",
        "--heads": "the encoder's head count",
        "--amp": "on with CUDA, but fp32 under the released-code preset and for --model umt and mt; off on CPU",
    }
    assert uses_amp(None, model, "cuda") and not uses_amp(None, model, "cpu")  # what --amp's default says
    assert not uses_amp(None, MAFConfig.from_preset("released-code"), "cuda")
    assert not uses_amp(None, default_config("umt"), "cuda")


def test_serve_help_shows_the_library_s_defaults():
    """`maf serve --help` against what the server does when given nothing: Limits, HOST, PORT,
    SPLIT and DEVICE of maf_core/serve/limits.py, which build() and serve() take as theirs."""
    from maf_core.predict import MAFPredictor
    from maf_core.serve import Limits, build, serve
    from maf_core.serve.browse import Browse
    from maf_core.serve.limits import DEVICE, HOST, PORT, SPLIT
    from maf_core.serve.security import Access

    def default(function, name: str):
        return inspect.signature(function).parameters[name].default

    limits = Limits()
    assert _shown_defaults("serve") == {
        "--host": HOST, "--port": str(PORT), "--split": SPLIT, "--device": DEVICE,
        "--max-upload-mb": str(limits.max_upload_bytes / 2**20), "--max-text": str(limits.max_text_chars),
        "--max-image-pixels": str(limits.max_image_pixels),
        "--images": "<corpus>/images, from the tokenized text",
        "--features": "the path the run recorded", "--text": "the path the run recorded",
    }
    assert (default(serve, "host"), default(serve, "port")) == (HOST, PORT) == (Access().host, Access().port)
    assert default(build, "split") == default(Browse, "split") == SPLIT
    assert default(build, "device") == default(MAFPredictor.from_pretrained, "device") == DEVICE
    assert default(build, "limits") is None  # build() then takes Limits()'s values, as the command does


def test_report_and_evaluate_help_show_the_library_s_defaults():
    from maf_core.inference import evaluate_run
    from maf_core.report import write_figures

    assert _shown_defaults("report") == {"--count": str(inspect.signature(write_figures).parameters["count"].default),
                                         "--case-run": "the first run with images", "--ids": "chosen",
                                         "--images": "<corpus>/images, from the tokenized text",
                                         "--annotations": "<corpus>/annotations.jsonl, as the sample corpus has",
                                         "--features": "the path the run recorded",
                                         "--text": "the path the run recorded"}
    evaluate = _shown_defaults("evaluate")
    assert evaluate["--split"] == inspect.signature(evaluate_run).parameters["split"].default
    assert evaluate["--batch-size"] == \
        f"the run's own evaluation batch, {TrainConfig().eval_batch_size} unless it was set"


def test_train_help_groups_every_option():
    sub = maf.main.get_command(click.Context(maf.main), "train")
    with click.Context(sub, info_name="train") as ctx:
        text = sub.get_help(ctx)
    sections = re.findall(r"^(\w[\w ]*):$", text, flags=re.MULTILINE)
    assert sections == ["Data", "Model", "Optimisation", "Run"]
    assert "Train MAF" not in text
