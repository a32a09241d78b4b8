from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_text

from cli import maf, pipe

BIN = Path(sys.executable).parent


def run(group, *args):
    return CliRunner().invoke(group.main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("command", [None, "make-sample", "build-vocab", "tokenize"])
def test_every_pipe_command_has_help(command):
    result = run(pipe, *([command] if command else []), "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
    if command:  # the docstring says what it does, and the options are explained
        assert len(pipe.main.commands[command].help) > 150
        for param in pipe.main.commands[command].params:
            if isinstance(param, __import__("click").Option) and param.name != "help":
                assert param.help, f"{command} --{param.name} has no help"


def test_maf_group_has_help():
    result = run(maf, "--help")
    assert result.exit_code == 0 and "Train, evaluate and apply MAF" in result.output


def test_pipeline_end_to_end_through_the_cli(tmp_path):
    data, tok, text = tmp_path / "data", tmp_path / "tok", tmp_path / "text"
    result = run(pipe, "make-sample", data, "--tweets", 60, "--seed", 2)
    assert result.exit_code == 0 and "wrote 60 tweets" in result.output and "image-decided" in result.output
    result = run(pipe, "build-vocab", data, "--out", tok, "--vocab-size", 300)
    assert result.exit_code == 0 and "cased WordPiece vocabulary" in result.output
    result = run(pipe, "tokenize", data, "--tokenizer", tok, "--out", text, "--max-length", 32, "--scheme", "bio")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["split", "tweets", "words", "PER", "LOC", "ORG", "MISC", "truncated", "no-piece"]
    assert [line.split()[0] for line in lines[2:5]] == ["train", "valid", "test"]
    assert lines[2].split()[1] == "36"
    meta = json.loads((text / "meta.json").read_text(encoding="utf-8"))
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


def test_other_user_mistakes_are_clear(tmp_path, sample_dir, tokenizer_dir):
    result = CliRunner().invoke(pipe.main, ["tokenize", str(tmp_path / "nowhere"), "--tokenizer", str(tokenizer_dir),
                                            "--out", str(tmp_path / "t")])
    assert result.exit_code == 1 and "no such directory" in result.output
    result = CliRunner().invoke(pipe.main, ["tokenize", str(sample_dir), "--tokenizer", str(tmp_path / "nope"),
                                            "--out", str(tmp_path / "t")])
    assert result.exit_code == 1 and "nope: no such tokenizer directory" in result.output
    result = CliRunner().invoke(pipe.main, ["make-sample", str(sample_dir)])
    assert result.exit_code == 1 and "pass --overwrite" in result.output


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
    proc = subprocess.run([str(BIN / "maf"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Usage: maf" in proc.stdout


def test_unwritable_output_is_an_error_not_a_traceback(tmp_path, sample_dir, tokenizer_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(pipe.main, ["tokenize", str(sample_dir), "--tokenizer", str(tokenizer_dir),
                                            "--out", str(blocker / "text")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and str(blocker) in result.output
    assert "Traceback" not in result.output


def test_readme_cli_reference_matches_help():
    from cli.reference import README, current, reference

    assert current(README.read_text(encoding="utf-8")) == reference(), \
        "README.md's CLI reference is stale: run .venv/bin/python -m cli.reference --write"
