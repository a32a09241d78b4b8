"""docs/serve.md's Python and curl examples, run as written against a served MAF run and a
served UMT run: `match_prob` is there in both (a number, and null for UMT: no CM), and
`maf predict`, `MAFPredictor` and the API give it the same name and shape."""
from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from maf_core.predict import MAFPredictor
from maf_core.serve import build

pytestmark = pytest.mark.slow  # trains a UMT run, serves two runs, starts subprocesses
DOC = Path(__file__).resolve().parents[1] / "docs" / "serve.md"


@pytest.fixture(scope="module")
def umt_run(sample_store, sample_text, tmp_path_factory) -> Path:
    """A tiny UMT-BERT-CRF run (no CM), one epoch."""
    from maf_core.config import MAFConfig, TrainConfig
    from maf_core.models.umt import umt_settings
    from maf_core.train import train
    from pipeline.store import FeatureStore

    out = tmp_path_factory.mktemp("served-umt") / "umt"
    train(FeatureStore(sample_store), sample_text, out, MAFConfig.tiny(**{**umt_settings("umt"), "scheme": "bioes"}),
          TrainConfig(epochs=1, batch_size=16, lr=1e-3, seed=3, device="cpu", tensorboard=False))
    return out


def _examples() -> tuple[str, list[str]]:
    text = DOC.read_text()
    python = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    shell = re.search(r"```\n(curl .*?)```", text, re.S).group(1)
    curls = [" ".join(part.split()) for part in re.split(r"\n(?=curl )", shell.replace("\\\n", " ")) if part.strip()]
    return python, curls


def _served(app):
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app.state.access.bind("127.0.0.1", port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return server, thread, port


@pytest.mark.parametrize("kind", ["maf", "umt"])
def test_the_python_and_curl_examples_run_against_maf_and_umt(kind, served_runs, umt_run, tmp_path):
    run = served_runs["maf"] if kind == "maf" else umt_run
    python, curls = _examples()
    assert len(curls) == 2
    picture = io.BytesIO()
    Image.new("RGB", (120, 90), (30, 140, 200)).save(picture, "JPEG")
    (tmp_path / "beach.jpg").write_bytes(picture.getvalue())
    server, thread, port = _served(build(run, device="cpu"))
    try:
        address = f"http://127.0.0.1:{port}"
        script = tmp_path / "example.py"
        script.write_text(python.replace("http://127.0.0.1:7860", address))
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 2 and lines[0].startswith("ok ") and lines[1].startswith("missing ")
        if kind == "umt":
            assert all(line.split()[1] == "-" for line in lines)  # null: UMT has no CM
        else:
            assert 0 <= float(lines[0].split()[1]) <= 1 and lines[1].split()[1] == "0.0"
        for curl in curls:
            command = curl.replace("http://127.0.0.1:7860", address)
            answer = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert answer.returncode == 0, answer.stderr
            items = json.loads(answer.stdout)["items"]
            for item in items:
                assert "match_prob" in item and item["p"] == item["match_prob"]
                assert (item["match_prob"] is None) == (kind == "umt")
                assert item["untagged"] == 0
    finally:
        server.should_exit = True
        thread.join(10)


def test_maf_predict_mafpredictor_and_the_api_give_match_prob_the_same_shape(served_runs, umt_run, tmp_path):
    from click.testing import CliRunner

    from cli.maf import main as maf
    from pipeline.store import FeatureStore

    features = json.loads((served_runs["maf"] / "config.json").read_text())["features"]
    item = {"id": "t1", "text": "Rob at the beach", "image": FeatureStore(features).image_ids[0]}
    tweets = tmp_path / "tweets.jsonl"
    tweets.write_text(json.dumps(item) + "\n")
    for run, want_none in ((served_runs["maf"], False), (served_runs["text-only"], True), (umt_run, True)):
        record = MAFPredictor.from_pretrained(run, "cpu").predict([item], features=features)[0]
        assert "match_prob" in record and (record["match_prob"] is None) == want_none
        out = tmp_path / f"{run.name}.jsonl"
        done = CliRunner().invoke(maf, ["predict", str(run), "--input", str(tweets), "--features", features,
                                        "--out", str(out)])
        assert done.exit_code == 0, done.output
        printed = json.loads(out.read_text())
        assert "match_prob" in printed and (printed["match_prob"] is None) == want_none
