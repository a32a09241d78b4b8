"""`maf table`: runs laid out as the paper's Table 2 (mean ± std over seeds, the published rows beside),
and the corpus identity it rests on: each split's source sha256 and counts, recorded by
`maf-pipe tokenize`, kept by the run, shown by `maf report` and the table, and a table refused
across versions of the corpus."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from statistics import mean, pstdev

import pytest
from click.testing import CliRunner

from cli.maf import main as maf
from maf_core.config import MAFConfig, TrainConfig
from maf_core.inputs import check_resume, read_inputs
from maf_core.metrics import image_decided_scores, read_annotations
from maf_core.models import ARCHITECTURES, default_config, model_name
from maf_core.report import corpus_summary, load_runs
from maf_core.run import RunDirectory
from maf_core.seeds import train_seeds
from maf_core.table import PUBLISHED, SCORES, build_table, published_row
from maf_core.train import train
from pipeline.errors import DataError
from pipeline.store import FeatureStore
from pipeline.tokenization import corpus_identity, describe_corpus, read_meta, summary_table, tokenize_corpus

CONFIG = TrainConfig(epochs=1, batch_size=16, lr=1e-3, seed=1, device="cpu", tensorboard=False)


@pytest.fixture(scope="module")
def corrected_text(sample_dir, tokenizer_dir, tmp_path_factory) -> Path:
    """The sample corpus with one train label corrected (B-PER -> B-ORG, as HVPNeT's relabelled
    Twitter-2015 differs from UMT's files), tokenized as `sample_text` is."""
    corpus = tmp_path_factory.mktemp("corrected") / "corpus"
    corpus.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        shutil.copy(sample_dir / name, corpus / name)
    train_text = (corpus / "train.txt").read_text(encoding="utf-8")
    (corpus / "train.txt").write_text(train_text.replace("\tB-PER\n", "\tB-ORG\n", 1), encoding="utf-8")
    out = corpus.parent / "text"
    tokenize_corpus(corpus, str(tokenizer_dir), out, max_length=64)
    return out


@pytest.fixture(scope="module")
def runs(sample_store, sample_text, corrected_text, tmp_path_factory) -> dict[str, Path]:
    """Tiny runs of 1 epoch: MAF over seeds 1 and 2 (a --seeds folder), the text-only baseline, and
    the baseline on the corrected corpus."""
    root = tmp_path_factory.mktemp("table")
    train_seeds(FeatureStore(sample_store), sample_text, root / "maf", MAFConfig.tiny(scheme="bioes"), CONFIG, [1, 2])
    text_only = MAFConfig.tiny(scheme="bioes", text_only=True)
    train(FeatureStore(sample_store), sample_text, root / "text-only", text_only, CONFIG)
    train(FeatureStore(sample_store), corrected_text, root / "corrected", text_only, CONFIG)
    return {"maf": root / "maf", "text-only": root / "text-only", "corrected": root / "corrected"}


def invoke(*args: str):
    return CliRunner().invoke(maf, ["table", *map(str, args)])


def markdown_rows(output: str) -> list[list[str]]:
    """The cells of each line of the Markdown table (header first, the |---| line left out)."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in output.splitlines() if line.startswith("|")]
    return [rows[0], *rows[2:]]


def report(run: Path) -> dict:
    return json.loads((run / "report.json").read_text(encoding="utf-8"))["test"]


def cells_of(test: dict) -> dict[str, float]:
    values = {t: test["types"].get(t, {"f1": 0.0})["f1"] for t in ("PER", "LOC", "ORG", "MISC")}
    values.update(P=test["overall"]["precision"], R=test["overall"]["recall"], F1=test["overall"]["f1"])
    return values


# -- corpus identity -----------------------------------------------------------------------------


def test_tokenize_records_each_splits_source_sha256_and_counts(sample_dir, sample_text):
    meta = read_meta(sample_text)
    for split, name in (("train", "train.txt"), ("valid", "valid.txt"), ("test", "test.txt")):
        stats = meta["splits"][split]
        assert stats["sha256"] == hashlib.sha256((sample_dir / name).read_bytes()).hexdigest()
        tweets = (sample_dir / name).read_text(encoding="utf-8").count("IMGID:")
        assert stats["tweets"] == tweets and sum(stats["entities"].values()) > 0
    assert meta["splits"]["train"]["sha256"][:12] in summary_table(meta).splitlines()[2]


def test_a_run_records_the_corpus_it_was_trained_on(runs, sample_text, corrected_text):
    recorded = json.loads((runs["text-only"] / "config.json").read_text(encoding="utf-8"))["corpus"]
    assert recorded == corpus_identity(read_meta(sample_text))
    corrected = json.loads((runs["corrected"] / "config.json").read_text(encoding="utf-8"))["corpus"]
    assert corrected["train"]["sha256"] != recorded["train"]["sha256"]
    assert corrected["test"] == recorded["test"] and corrected["valid"] == recorded["valid"]
    assert corrected["train"]["entities"]["ORG"] == recorded["train"]["entities"]["ORG"] + 1


def test_text_tokenized_before_the_hashes_still_trains_and_reads_as_unknown(sample_text, sample_store, tmp_path):
    old = tmp_path / "old-text"
    shutil.copytree(sample_text, old)
    meta = read_meta(old)
    for stats in meta["splits"].values():
        del stats["sha256"]
    (old / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    inputs = read_inputs(FeatureStore(sample_store), old, MAFConfig.tiny(scheme="bioes"), CONFIG)
    assert all(stats["sha256"] is None for stats in inputs.record["corpus"].values())
    assert "train sha256 unknown (90 tweets" in describe_corpus(inputs.record["corpus"])
    assert summary_table(meta).splitlines()[2].split()[-1] == "unknown"


def test_resume_on_another_version_of_the_corpus_is_refused(runs, sample_store, corrected_text):
    inputs = read_inputs(FeatureStore(sample_store), corrected_text, MAFConfig.tiny(scheme="bioes", text_only=True),
                         CONFIG)
    with pytest.raises(DataError, match=r"cut from another version of the corpus than the run .*text-only was "
                                        r"started on \(train differ\)"):
        check_resume(RunDirectory(runs["text-only"]), inputs.record, "maf")


def test_maf_reports_corpus_names_the_version_and_what_differs(runs):
    same = corpus_summary(load_runs([runs["maf"], runs["text-only"]]))
    assert same.startswith("corpus of every run: train sha256 ") and "\n" not in same
    mixed = corpus_summary(load_runs([runs["text-only"], runs["corrected"]]))
    assert mixed.splitlines()[-1] == "DIFFERENT VERSIONS OF THE CORPUS: text-only and corrected (train differ)"


# -- the table -------------------------------------------------------------------------------------


def test_the_table_lays_out_each_runs_scores_as_table_2(runs, sample_dir):
    done = invoke(runs["maf"], runs["text-only"])
    assert done.exit_code == 0, done.output
    header, maf_row, text_row = markdown_rows(done.output)
    assert header == ["system", "run", "seeds", "PER", "LOC", "ORG", "MISC", "P", "R", "F1", "image-decided F1",
                      "other F1"]
    seeds = [cells_of(report(runs["maf"] / f"seed-{s}")) for s in (1, 2)]
    notes = read_annotations(sample_dir / "annotations.jsonl")
    for row, expected in ((maf_row, seeds), (text_row, [cells_of(report(runs["text-only"]))])):
        directories = [runs["maf"] / "seed-1", runs["maf"] / "seed-2"] if len(expected) == 2 else [runs["text-only"]]
        image = [image_decided_scores(run.predictions, notes, run.report, False) for run in load_runs(directories)]
        for column in SCORES + ("image-decided F1", "other F1"):
            key = {"image-decided F1": "image_decided_f1", "other F1": "other_f1"}.get(column)
            values = [i[key] for i in image] if key else [e[column] for e in expected]
            wanted = f"{values[0]:.2f}" if len(values) == 1 else f"{mean(values):.2f} ± {pstdev(values):.2f}"
            assert row[header.index(column)] == wanted, column
    assert maf_row[:3] == [f"{model_name(MAFConfig.tiny())} *", str(runs["maf"]), "2"]
    assert text_row[:3] == [f"{model_name(MAFConfig.tiny(text_only=True))} *", str(runs["text-only"]), "1"]
    assert "Corpus (every run): train sha256 " in done.output and "RANDOM-init" in done.output


def test_the_json_table_agrees_with_the_seeds_summary(runs):
    done = invoke(runs["maf"], "--json")
    assert done.exit_code == 0, done.output
    table = json.loads(done.output)
    (row,) = table["rows"]
    summary = json.loads((runs["maf"] / "summary.json").read_text(encoding="utf-8"))["test"]
    for column, metric in (("P", "precision"), ("R", "recall"), ("F1", "f1")):
        assert row["scores"][column]["mean"] == pytest.approx(summary["overall"][metric]["mean"])
        assert row["scores"][column]["std"] == pytest.approx(summary["overall"][metric]["std"])
    assert row["seeds"] == [1, 2] and row["published"] is None and table["mixed_corpora"] == []


@pytest.mark.parametrize("paper", list(PUBLISHED))
def test_paper_puts_the_published_row_under_each_system(runs, paper):
    done = invoke(runs["maf"], runs["text-only"], "--paper", paper)
    assert done.exit_code == 0, done.output
    header, maf_row, maf_published, text_row, text_published = markdown_rows(done.output)
    for row, published in ((maf_row, maf_published), (text_row, text_published)):
        expected = published_row(paper, row[0].rstrip(" *"))
        assert published[0] == f"{expected.label}, published" and published[2] == ""
        assert published[3:10] == [f"{v:.2f}" for v in expected.scores] and published[10:] == ["–", "–"]
    assert maf_published[0] == "MAF, published" and text_published[0] == "BERT-CRF, published"
    assert "Yu et al. (ACL 2020)" in done.output and "No published row" not in done.output


def test_a_system_without_a_published_row_says_so(runs, monkeypatch):
    monkeypatch.setitem(PUBLISHED, "twitter2015", tuple(r for r in PUBLISHED["twitter2015"] if r.label != "MAF"))
    table = build_table([runs["maf"]], "twitter2015")
    assert table["rows"][0]["published"] is None
    done = invoke(runs["maf"], "--paper", "twitter2015")
    assert f"No published row in Xu et al., MAF (WSDM 2022), Table 2 for: MAF ({runs['maf']})." in done.output


def test_every_model_of_the_registry_has_its_published_row():
    systems = [model_name(default_config(name)) for name in ARCHITECTURES] + [model_name(MAFConfig(text_only=True))]
    for paper in PUBLISHED:
        assert [s for s in systems if published_row(paper, s) is None] == []
    assert published_row("twitter2015", "T-NER") is None  # a row of the paper that no model here stands for


def test_the_published_overall_f1_is_the_harmonic_mean_of_its_p_and_r():
    """A check on the typing: each published F1 is 2PR / (P + R) of its row within rounding (0.01),
    but for the three rows where the paper's own numbers disagree by more (as printed there)."""
    as_printed = {("twitter2015", "MAF"): 73.444, ("twitter2017", "AdaCAN-BERT-CRF"): 84.154,
                  ("twitter2017", "MT-BERT-CRF"): 84.379}  # 2PR / (P + R) of those rows
    for paper, rows in PUBLISHED.items():
        for row in rows:
            precision, recall, f1 = row.scores[4:]
            harmonic = 2 * precision * recall / (precision + recall)
            if (paper, row.label) in as_printed:
                assert harmonic == pytest.approx(as_printed[paper, row.label], abs=1e-3)
                assert abs(f1 - harmonic) > 0.02
            else:
                assert f1 == pytest.approx(harmonic, abs=0.01), (paper, row.label)


def test_runs_on_different_versions_of_the_corpus_are_refused_in_one_line(runs):
    done = invoke(runs["text-only"], runs["corrected"])
    assert done.exit_code == 1
    assert done.output == (f"Error: runs trained on different versions of the corpus ({runs['text-only']} vs "
                           f"{runs['corrected']}: train differ); a table compares runs on one version only "
                           "(--mixed-corpora lays them out anyway, marked)\n")


def test_mixed_corpora_lays_them_out_marked(runs):
    done = invoke(runs["text-only"], runs["corrected"], "--mixed-corpora")
    assert done.exit_code == 0, done.output
    assert done.output.startswith("**MIXED CORPORA (--mixed-corpora): these runs were trained on different versions")
    assert f"Corpus of {runs['corrected']}: train sha256 " in done.output
    assert len(markdown_rows(done.output)) == 3


def test_a_run_from_before_corpus_identity_is_shown_unknown_not_refused(runs, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(runs["text-only"], old)
    config = json.loads((old / "config.json").read_text(encoding="utf-8"))
    del config["corpus"]
    (old / "config.json").write_text(json.dumps(config), encoding="utf-8")
    done = invoke(runs["corrected"], old)
    assert done.exit_code == 0, done.output
    assert f"Corpus version unknown, not checked (text tokenized, or runs trained, before sha256s were recorded): " \
           f"{old}." in done.output
    assert f"Corpus of {old}: unknown" in done.output


def test_an_unfinished_run_is_refused(runs, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs["text-only"], unfinished)
    (unfinished / "report.json").unlink()
    done = invoke(unfinished)
    assert done.exit_code == 1
    assert done.output == f"Error: {unfinished}: no test scores in report.json; the run has not finished\n"


def test_an_annotations_file_that_is_not_there_is_refused(runs, tmp_path):
    done = invoke(runs["text-only"], "--annotations", tmp_path / "none.jsonl")
    assert done.exit_code == 1 and done.output == f"Error: {tmp_path / 'none.jsonl'}: no such annotations file\n"


def test_without_annotations_the_image_columns_are_left_out(runs):
    header = markdown_rows(invoke(runs["corrected"]).output)[0]  # its corpus has no annotations.jsonl
    assert header[3:] == list(SCORES)


# -- benchmarks/table2.py ------------------------------------------------------------------------


def test_the_benchmark_trains_every_model_of_the_registry_and_text_only_with_flags_train_accepts(tmp_path):
    from benchmarks.robustness import demo_flags
    from benchmarks.table2 import TEXT_ONLY, row_config, rows, train_flags
    from cli.maf_commands import train as train_command

    every = rows()
    assert list(every) == [*ARCHITECTURES, TEXT_ONLY]
    demo, _ = demo_flags()
    for name, flags in every.items():
        cls, config = row_config(flags)
        assert config.architecture == (name if name != TEXT_ONLY else ARCHITECTURES[0])
        assert config.text_only == (name == TEXT_ONLY or default_config(config.architecture).text_only)
        recipe_batch = cls.train_defaults(None).get("batch_size")
        args = ["--features", "s.h5", "--text", "t", "--out", str(tmp_path),
                *train_flags(demo, "bert_size" in cls.options, 1, "tiny", recipe_batch), *flags]
        context = train_command.make_context("train", args)  # click's parsing: a flag it does not know raises
        assert context.params["epochs"] == 1
        assert recipe_batch != 1 or context.params["batch_size"] == 10  # HBiLSTM's batches of 1 do not fit the time
        assert "bert_size" not in cls.options or context.params["bert_config"] == "tiny"


def test_the_benchmark_leaves_out_bert_config_for_a_model_without_bert():
    from benchmarks.table2 import train_flags

    demo = ["--bert-config", "small", "--epochs", "12", "--lr", "3e-4"]
    assert train_flags(demo, True, None, None) == demo
    assert train_flags(demo, True, 1, "tiny") == ["--bert-config", "tiny", "--epochs", "1", "--lr", "3e-4"]
    # the word-level rows: their recipe's rate and batch, 25 epochs (or --epochs)
    assert train_flags(demo, False, None, "tiny") == ["--epochs", "25"]
    assert train_flags(demo, False, 3, "tiny", recipe_batch=10) == ["--epochs", "3"]
    # ... and a recipe of batches of 1 in batches of 10 with AdamW
    assert train_flags(demo, False, None, None, recipe_batch=1) == [
        "--epochs", "25", "--batch-size", "10", "--optimizer", "adamw", "--lr", "1e-3"]
    assert train_flags(demo, True, None, None, recipe_batch=1) == demo


def test_the_benchmark_trains_two_at_a_time_each_on_its_share_of_the_cores_and_names_a_failed_runs_log(
        tmp_path, monkeypatch):
    import subprocess

    from benchmarks import robustness
    from benchmarks.table2 import run_all

    seen = []

    def fake_run(argv, env=None, stdout=None, **kwargs):
        out = Path(argv[argv.index("--out") + 1])
        seen.append((out.parent.name, out.name, env["OMP_NUM_THREADS"], Path(stdout.name).name))
        if out.parent.name == "broken":
            raise subprocess.CalledProcessError(3, argv)
        out.mkdir(parents=True)
        (out / "report.json").write_text("{}")

    monkeypatch.setattr(robustness.subprocess, "run", fake_run)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    tasks = [(name, seed, tmp_path / "text", ["--epochs", "1"]) for name in ("maf", "umt") for seed in (1, 2)]
    commands = {"maf": "--epochs 1", "umt": "--epochs 1", "broken": "--epochs 1"}
    minutes = run_all(tasks, tmp_path, tmp_path / "store.h5", commands, jobs=2)
    assert sorted(seen) == [(n, f"seed-{s}", "2", f"{n}-seed-{s}.log") for n in ("maf", "umt") for s in (1, 2)]
    assert {name: len(spent) for name, spent in minutes.items()} == {"maf": 2, "umt": 2}
    assert all((tmp_path / "runs" / n / f"seed-{s}" / "report.json").is_file() for n in ("maf", "umt") for s in (1, 2))

    with pytest.raises(SystemExit, match=r"broken, seed 1 failed \(exit status 3\): see .*logs/broken-seed-1.log"):
        run_all([("broken", 1, tmp_path / "text", [])], tmp_path, tmp_path / "store.h5", commands, jobs=2)


def test_an_ablated_maf_is_labelled_so_and_gets_no_published_row(runs, tmp_path):
    ablated = tmp_path / "no-cm"
    shutil.copytree(runs["maf"] / "seed-1", ablated)
    config = json.loads((ablated / "config.json").read_text(encoding="utf-8"))
    config["model"]["use_matching"] = False
    (ablated / "config.json").write_text(json.dumps(config), encoding="utf-8")
    table = build_table([runs["maf"], ablated], "twitter2015")
    assert [row["system"] for row in table["rows"]] == ["MAF", "MAF without CM"]
    assert table["rows"][0]["published"] is not None and table["rows"][1]["published"] is None
    assert table["rows"][1]["model"].endswith("without CM")
