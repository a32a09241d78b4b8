"""One writer per output: a second `extract-images` or `maf train` on the same --out is refused
at once, naming the process that writes it, and the first finishes untouched."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.maf import main as maf
from cli.pipe import main as pipe
from pipeline.errors import DataError
from pipeline.files import output_lock
from pipeline.store import FeatureStore

BIN = Path(sys.executable).parent


def _wait_for_lock(lock: Path, process: subprocess.Popen, seconds: float = 120) -> str:
    """The lock file's text once the first writer holds it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if lock.is_file() and f"process {process.pid} " in lock.read_text():
            return lock.read_text()
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{lock} never taken")


@pytest.mark.slow
def test_a_second_extraction_on_the_same_store_is_refused(sample_dir, tmp_path):
    out = tmp_path / "store.h5"
    args = [str(sample_dir / "images"), "--ids-from", str(sample_dir), "--out", str(out), "--backbone", "resnet18",
            "--weights", "none", "--workers", "0", "--shard-size", "16"]
    first = subprocess.Popen([str(BIN / "maf-pipe"), "extract-images", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    _wait_for_lock(tmp_path / ".store.h5.lock", first)
    second = CliRunner().invoke(pipe, ["extract-images", *args])
    assert second.exit_code == 1 and "Traceback" not in second.output
    assert f"store.h5: process {first.pid} on " in second.output and "is writing it now" in second.output
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    assert len(FeatureStore(out)) == len(list((sample_dir / "images").iterdir()))
    again = CliRunner().invoke(pipe, ["extract-images", *args])  # the lock went with the first process
    assert again.exit_code == 0 and "reused" in again.output.lower(), again.output


@pytest.mark.slow
def test_a_second_training_on_the_same_run_is_refused(sample_text, sample_store, tmp_path):
    run = tmp_path / "run"
    args = ["--features", str(sample_store), "--text", str(sample_text), "--out", str(run), "--bert-config", "tiny",
            "--epochs", "3", "--batch-size", "16", "--device", "cpu", "--no-tensorboard"]
    first = subprocess.Popen([str(BIN / "maf"), "train", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    _wait_for_lock(tmp_path / ".run.lock", first)
    for extra in ([], ["--resume"]):
        second = CliRunner().invoke(maf, ["train", *args, *extra])
        assert second.exit_code == 1 and f"run: process {first.pid} on " in second.output, second.output
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    assert (run / "report.json").is_file() and len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]);"
                               "from pipeline.files import output_lock;"
                               "ctx = output_lock(sys.argv[2]); ctx.__enter__(); print('held', flush=True);"
                               "time.sleep(60)", str(Path(__file__).parents[1]), str(tmp_path / "out")],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(DataError, match=f"out: process {holder.pid} on .* is writing it now"):
        with output_lock(tmp_path / "out"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with output_lock(tmp_path / "out"):  # kill -9 released it
        assert f"process {os.getpid()} " in (tmp_path / ".out.lock").read_text()


def test_the_lock_of_the_current_directory_lies_beside_it(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    with output_lock(".") as lock:  # `maf train --resume --out .` from inside the run
        assert lock == tmp_path / ".run.lock"
