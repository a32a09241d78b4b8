"""benchmarks/p_ceiling.py (the AUC of the p that minimises CM's own-vs-swapped loss on a corpus) and
benchmarks/robustness.py (reuse of finished runs), and benchmarks/sample_experiment.py's recipe (the demo's)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.p_ceiling import ceiling, corpus_pairs, generator_pairs, main, ratio_table, text_kind


def test_text_kind_leaves_out_the_image_decided_entity():
    labels = ["O", "B-PER", "O", "B-LOC", "I-LOC", "B-ORG"]
    assert text_kind(labels, {1}) == (True, ("LOC", "ORG"))
    assert text_kind(labels, set()) == (False, ("PER", "LOC", "ORG"))
    assert text_kind(["O", "S-MISC"], set()) == (False, ("MISC",))


def _record(relation: str, image_class: str) -> dict:
    return {"relation": relation, "image_class": image_class}


def test_the_ratio_ranks_images_by_how_much_the_text_predicts_them():
    # LOC texts come with landscapes and unrelated food, ORG texts with buildings
    loc, org = (False, ("LOC",)), (False, ("ORG",))
    train = [(loc, "landscape")] * 8 + [(loc, "food")] * 2 + [(org, "building")] * 10
    ratio = ratio_table(train, smoothing=0.0)
    assert ratio(loc, "landscape") == pytest.approx((8 / 10) / (8 / 20))
    assert ratio(org, "landscape") == 0.0
    assert ratio((True, ()), "landscape") == 1.0  # a kind never seen: nothing known
    # food comes only with LOC texts, so after one it is as "expected" as a landscape
    test = [("1", loc, _record("matched", "landscape")), ("2", loc, _record("unrelated", "food")),
            ("3", org, _record("unrelated", "landscape"))]
    score, means = ceiling(test, ratio)
    assert score == pytest.approx(0.75)  # a tie with food (ratio 2 both: 1/2), above the absent cue (1)
    assert means["unrelated, entities, a cue class"] == 0.0


def test_on_the_sample_generator_unrelated_distractors_outrank_image_decided_matches():
    """The claim of docs/model.md: after a tweet without entities, a distractor is more
    'expected' than any cue class after an image-decided name, so a CM trained to the end
    ranks those unrelated images above matched ones."""
    ratio = ratio_table(generator_pairs(20000, seed=7))
    image_decided = [ratio((True, ()), cue) for cue in ("person", "landscape", "building", "animal")]
    distractors = [ratio((False, ()), image) for image in ("food", "screenshot", "noise")]
    typed_match = ratio((False, ("LOC",)), "landscape")
    assert max(image_decided) < 1.5 < min(distractors)
    assert typed_match > 2 * max(image_decided)


def test_the_script_prints_the_ceiling_and_each_run(sample_dir, capsys, monkeypatch, tmp_path):
    test = corpus_pairs(sample_dir)["test"]
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    # a perfect p: 1 for matched, 0 for unrelated
    rows = [{"id": image_id, "match_prob": float(record["relation"] == "matched")} for image_id, _, record in test]
    (run / "predictions" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr("sys.argv", ["p_ceiling.py", str(sample_dir), "--generator-tweets", "3000",
                                     "--runs", str(run)])
    main()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["test_matched"] + result["test_unrelated"] == len(test)
    assert 0.5 < result["ceiling_auc_generator"] <= 1  # a test split of 30 tweets: anything
    assert 0.6 < result["ceiling_auc_population"] < 0.85  # the generator's own: 0.76 (docs/model.md)
    assert result["runs"][0]["auc"] == 1.0


def test_a_folder_without_annotations_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["p_ceiling.py", str(tmp_path)])
    with pytest.raises(SystemExit, match="no annotations.jsonl"):
        main()


def test_robustness_reuses_a_run_only_when_its_flags_are_the_same(tmp_path, monkeypatch):
    """benchmarks/robustness.py: a finished run is reused when trained with the same flags; after
    the demo's recipe changes, it is trained again rather than reported under the new flags."""
    from benchmarks import robustness

    calls = []

    def fake_run(command, **kwargs):
        out = Path(command[command.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "report.json").write_text("{}")
        calls.append(command)

    monkeypatch.setattr(robustness.subprocess, "run", fake_run)
    run = tmp_path / "seed-1"
    robustness.train(run, tmp_path / "store.h5", tmp_path / "text", ["--batch-size", "32"], 1)
    robustness.train(run, tmp_path / "store.h5", tmp_path / "text", ["--batch-size", "32"], 1)
    assert len(calls) == 1
    assert (run / robustness.FLAGS_FILE).read_text().strip() == "--batch-size 32 --seed 1"
    robustness.train(run, tmp_path / "store.h5", tmp_path / "text", ["--batch-size", "16"], 1)
    assert len(calls) == 2 and (run / robustness.FLAGS_FILE).read_text().strip() == "--batch-size 16 --seed 1"


def test_the_sample_experiment_trains_with_the_demos_recipe():
    from benchmarks.robustness import demo_flags
    from benchmarks.sample_experiment import build_parser

    flags = demo_flags()[0]
    demo = {flags[i]: flags[i + 1] for i in range(len(flags) - 1) if flags[i].startswith("--")}
    args = build_parser().parse_args([])
    assert args.epochs == int(demo["--epochs"])
    assert args.batch_size == int(demo["--batch-size"])
    assert args.lr == float(demo["--lr"])
    assert args.head_lr is None and "--head-lr" not in demo  # one rate for BERT and the heads
    assert args.bert_config == demo["--bert-config"]


def test_model_step_counts_flops_by_part_and_the_parts_add_up_to_the_forward():
    from argparse import Namespace

    from benchmarks.model_step import flop_counts

    args = Namespace(batch_size=4, pieces=12, words=8)
    maf, bert_crf = (flop_counts("tiny", model, args) for model in ("maf", "text-only"))
    assert maf["forward_parts_gflops"]["bert"] == bert_crf["forward_parts_gflops"]["bert"] > 0  # the same encoder
    assert {"interaction", "fusion"} <= set(maf["forward_parts_gflops"]) and "interaction" not in bert_crf[
        "forward_parts_gflops"]
    for row in (maf, bert_crf):
        assert abs(sum(row["forward_parts_gflops"].values()) - row["forward_gflops"]) <= 0.002  # rounding only
        assert row["gflops"] > row["forward_gflops"]  # the backward is counted too
    assert maf["gflops"] > bert_crf["gflops"] and maf["parameters_m"] > bert_crf["parameters_m"]
