"""`maf report`: PNG figures of finished runs (matplotlib, no display needed).

- curves.png: loss parts (total, NER, CA, CM) and dev F1 per epoch, one line per run;
- types.png: test F1 per entity type and overall, runs side by side;
- match.png: histograms of p, the match probability, per run: matched vs unrelated images
  where the corpus says which is which (the sample corpus' annotations.jsonl), else all
  tweets with an image;
- corpus.txt: which version of the corpus each run was trained on (each split's source sha256
  and counts, as config.json records them), and the splits on which runs differ;
- comparison.txt (annotated corpora): test F1, F1 on image-decided entities and on the
  others, mean p for matched and unrelated images, per run;
- cases.png: the paper's Table 5 in pictures: for chosen test tweets, the image the backbone
  saw with the CI attention of each word of each predicted entity as a 7×7 heatmap (all maps
  on one colour scale, with its colour bar), the words with predicted and gold tags, and p.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maf_core.data import load_split
from maf_core.inference import tag_rows, word_attention
from maf_core.metrics import auc, corpus_annotations, image_decided_scores, p_by_relation, read_annotations
from maf_core.run import RunDirectory
from pipeline.conll import ENTITY_TYPES
from pipeline.errors import DataError
from pipeline.images import STATUS, ImageIndex, Transform, load_tensor, read_image_bytes
from pipeline.schemes import bioes_to_bio, get_entities
from pipeline.tokenization import corpus_differences, describe_corpus, read_meta

logger = logging.getLogger(__name__)


@dataclass
class Run:
    path: Path
    name: str
    config: dict
    metrics: list[dict]
    report: dict | None
    predictions: list[dict] = field(default_factory=list)

    @property
    def text_only(self) -> bool:
        return bool(self.config["model"].get("text_only"))

    @property
    def random_encoder(self) -> bool:
        """Trained without --bert: a random-init text encoder, whose scores say nothing of a real one."""
        return self.config["model"].get("bert") is None

    @property
    def has_matching(self) -> bool:
        model = self.config["model"]
        return not model.get("text_only") and model.get("use_matching", True)


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Finished run directories; a --seeds directory (seed-N/ inside) stands for all its seeds."""
    runs = []
    for given in paths:
        path = Path(given)
        seeds = sorted(path.glob("seed-*/config.json"))
        for directory in [s.parent for s in seeds] if seeds else [path]:
            run = RunDirectory(directory)
            if not run.file(run.CONFIG).is_file() or not run.file(run.METRICS).is_file():
                raise DataError(f"{directory}: not a run directory (config.json and metrics.jsonl expected)")
            name = f"{path.name}/{directory.name}" if seeds else path.name
            predictions = run.predictions() / "test.jsonl"
            rows = predictions.read_text(encoding="utf-8").splitlines() if predictions.is_file() else []
            runs.append(Run(directory, name, run.record, run.metrics(), run.read_report(),
                            [json.loads(x) for x in rows if x.strip()]))
    return runs


def _pyplot():
    import warnings

    import matplotlib

    warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # emoji in tweets

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, target: Path, dpi: int = 110) -> Path:
    """Lay the figure out, write it to `target` and free it."""
    fig.tight_layout()
    fig.savefig(target, dpi=dpi)
    plt.close(fig)
    return target


def curves(runs: list[Run], out: Path) -> Path:
    plt = _pyplot()
    panels = [("loss", "loss (weighted total)"), ("loss_ner", "NER (CRF NLL)"), ("loss_ca", "CA (InfoNCE)"),
              ("loss_cm", "CM (BCE)"), ("dev_f1", "dev F1")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels):
        drawn = 0
        for run in runs:
            epochs = [m["epoch"] for m in run.metrics if key in m]
            values = [m[key] for m in run.metrics if key in m]
            if key in ("loss_ca", "loss_cm") and not any(values):
                continue  # the part is switched off in this run
            ax.plot(epochs, values, marker="o", markersize=3, label=run.name)
            drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "switched off in these runs", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    return _save(plt, fig, out / "curves.png")


def type_bars(runs: list[Run], out: Path, split: str = "test") -> Path | None:
    scored = [r for r in runs if r.report and split in r.report]
    if not scored:
        return None
    plt = _pyplot()
    groups = [t for t in ENTITY_TYPES if any(t in r.report[split]["types"] for r in scored)] + ["overall"]
    width = 0.8 / len(scored)
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 2, 4))
    for n, run in enumerate(scored):
        values = [run.report[split]["overall"]["f1"] if g == "overall" else
                  run.report[split]["types"].get(g, {}).get("f1", 0.0) for g in groups]
        bars = ax.bar(np.arange(len(groups)) + n * width - 0.4 + width / 2, values, width, label=run.name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylabel(f"{split} F1")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"F1 per entity type ({split})")
    return _save(plt, fig, out / "types.png")


def match_groups(run: Run, annotations: dict[str, dict]) -> dict[str, list[float]]:
    """p of the run's test tweets: matched / unrelated (when annotated), or all with an image."""
    return p_by_relation([r["id"] for r in run.predictions], [r["match_prob"] for r in run.predictions], annotations)


def comparison_table(runs: list[Run], annotations: dict[str, dict]) -> str:
    """One line per run: test F1, image-decided F1, other F1, mean p matched / unrelated, AUC."""
    head = (
        f"{'run':<28}{'test F1':>9}{'img-decided F1':>16}{'other F1':>10}{'p matched':>11}{'p unrelated':>13}{'AUC':>7}"
    )
    lines = [head]
    for run in runs:
        scores = image_decided_scores(run.predictions, annotations, run.report, run.has_matching)

        def cell(key: str, width: int, digits: int, scores: dict = scores) -> str:
            value = scores[key]
            return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

        lines.append(
            f"{(run.name[:25] + (' *' if run.random_encoder else '')):<28}"
            + cell("f1", 9, 2)
            + cell("image_decided_f1", 16, 2)
            + cell("other_f1", 10, 2)
            + cell("p_matched", 11, 2)
            + cell("p_unrelated", 13, 2)
            + cell("p_auc", 7, 2)
        )
    if any(run.random_encoder for run in runs):
        lines.append("* a RANDOM-init text encoder (trained without --bert): these scores say nothing about a "
                     "pretrained one")
    return "\n".join(lines)


def corpus_differences_from_first(runs: list[Run]) -> list[tuple[Run, Run, list[str]]]:
    """(first run, other run, the splits that differ) for each run trained on another version of the
    corpus than the first run that recorded one (config.json's "corpus"; runs and text from before
    it was recorded are not known to differ)."""
    known = [run for run in runs if run.config.get("corpus")]
    return [(known[0], run, changed) for run in known[1:]
            if (changed := corpus_differences(known[0].config["corpus"], run.config["corpus"]))]


def corpus_summary(runs: list[Run]) -> str:
    """Which version of the corpus the runs were trained on: each split's source sha256 and counts,
    once when every run shares them, else per run, with the splits that differ."""
    identities = {json.dumps(run.config.get("corpus"), sort_keys=True) for run in runs}
    if len(identities) == 1:
        return f"corpus of every run: {describe_corpus(runs[0].config.get('corpus'))}"
    lines = ["corpus of each run:"] + [f"  {run.name}: {describe_corpus(run.config.get('corpus'))}" for run in runs]
    lines += [f"DIFFERENT VERSIONS OF THE CORPUS: {first.name} and {other.name} ({', '.join(changed)} differ)"
              for first, other, changed in corpus_differences_from_first(runs)]
    return "\n".join(lines)


def match_histogram(runs: list[Run], out: Path, annotations: dict[str, dict]) -> Path | None:
    chosen = [r for r in runs if r.has_matching and r.predictions]
    if not chosen:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.5 * len(chosen), 3.6), squeeze=False)
    bins = np.linspace(0, 1, 26)
    for ax, run in zip(axes[0], chosen):
        groups = match_groups(run, annotations)
        for (label, values), colour in zip(groups.items(), ("tab:green", "tab:red", "tab:blue")):
            if values:
                ax.hist(values, bins=bins, alpha=0.6, color=colour,
                        label=f"{label}: n={len(values)}, mean {np.mean(values):.2f}")
        score = auc(groups.get("matched", []), groups.get("unrelated", []))
        ax.set_title(run.name + (f"  (AUC {score:.2f})" if score is not None else ""), fontsize=9)
        ax.set_xlabel("p, match probability (test)")
        ax.legend(fontsize=7)
    return _save(plt, fig, out / "match.png")


def case_study(run: Run, out: Path, ids: list[str] | None = None, count: int = 4,
               images_dir: Path | None = None, annotations: dict[str, dict] | None = None,
               features: str | Path | None = None, text: str | Path | None = None) -> Path | None:
    """Heatmaps of CI attention over the image for each word of each predicted entity.
    `features`, `text`: the run's store and text where they are now, if moved."""
    if run.text_only:
        return None
    directory = RunDirectory(run.path)
    text_dir = directory.data("text_dir", text)
    meta = read_meta(text_dir)
    images_dir = Path(images_dir) if images_dir else Path(meta.get("source", "")) / "images"
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: no images directory for the case study; pass --images DIR")
    store = directory.open_store(features)
    split = load_split(text_dir, "test")
    position = {image_id: n for n, image_id in enumerate(split.image_ids)}
    ok = {i for i in split.image_ids if i in store and store.status[store.rows[i]] == STATUS["ok"]}
    if ids:
        missing = [i for i in ids if i not in position]
        if missing:
            raise DataError(f"{text_dir}/test.arrow: no tweets with ids {', '.join(missing[:5])}")
        chosen = [position[i] for i in ids]
    else:  # tweets with a predicted entity and an image; image-decided ones first where annotated
        notes = annotations or {}
        with_entities = [r for r in run.predictions if r["entities"] and str(r["id"]) in ok]
        with_entities.sort(key=lambda r: (not notes.get(str(r["id"]), {}).get("image_decided"), 0))
        chosen = [position[str(r["id"])] for r in with_entities[:count]]
    if not chosen:
        return None
    model = directory.load_best("cpu")
    batch, output = tag_rows(model, split, chosen, store)
    return _draw_cases(run, model, split, chosen, batch, output, store, images_dir, annotations, out)


MAX_MAPS = 6  # heatmaps per tweet in cases.png; the words past it are named under the tags


def _word_maps(tags: list[str], seen: int) -> list[tuple[str, int, int, int]]:
    """(type, start, end, word) for each word of each entity that the model saw (`seen` words)."""
    return [(kind, start, end, word) for kind, start, end in get_entities(tags)
            for word in range(start, min(end, seen))]


def _draw_cases(run: Run, model, split, chosen: list[int], batch: dict, output, store, images_dir: Path,
                annotations: dict[str, dict] | None, out: Path) -> Path:
    """One row per chosen tweet: its image under the attention of each word of each predicted
    entity (up to MAX_MAPS), then its tags; one colour scale for every map, as `maf serve` draws them."""
    fingerprint = store.fingerprint
    transform = Transform(fingerprint["transform"]["name"], fingerprint["transform"].get("seed", 0))
    index = ImageIndex(images_dir)
    grid = int(round(np.sqrt(model.config.num_regions)))

    attention = word_attention(output, batch)  # shape: (rows, words, regions)
    plt = _pyplot()
    predicted_tags, maps = [], []
    for row in range(len(chosen)):
        tags = [model.config.tags[t] for t in output.tags[row]]
        predicted_tags.append(bioes_to_bio(tags) if model.config.scheme == "bioes" else tags)
        maps.append(_word_maps(predicted_tags[-1], int(batch["word_mask"][row].sum())))
    pictures = min(MAX_MAPS, max(1, *(len(m) for m in maps)))  # heatmaps per row, then the text
    columns = pictures + 1
    fig, axes = plt.subplots(len(chosen), columns, figsize=(3.6 * pictures + 4.5, 3.6 * len(chosen)), squeeze=False,
                             gridspec_kw={"width_ratios": [1] * pictures + [1.3]})
    # one colour scale for every map (as `maf serve` draws them): 0 to the largest weight drawn, at least 2/R
    regions = grid * grid
    drawn = [attention[row, word] for row in range(len(chosen)) for *_, word in maps[row][:pictures]]
    top = max([2 / regions] + [float(w.max()) for w in drawn])
    heat = None
    for row, i in enumerate(chosen):
        image_id = split.image_ids[i]
        status, data = read_image_bytes(index, image_id)
        picture = None
        if status == STATUS["ok"]:
            status, array = load_tensor(data, image_id, transform)
            picture = array.transpose(1, 2, 0) if array is not None else None
        tags = predicted_tags[row]
        shown = maps[row][:pictures]
        for col in range(columns - 1):
            ax = axes[row][col]
            ax.axis("off")
            if col >= max(1, len(shown)) or picture is None:
                continue
            ax.imshow(picture)
            if col < len(shown):
                kind, start, end, word = shown[col]
                weights = attention[row, word].reshape(grid, grid).numpy()
                heat = ax.imshow(weights, cmap="jet", alpha=0.45, extent=(0, picture.shape[1], picture.shape[0], 0),
                                 interpolation="nearest", vmin=0, vmax=top)
                entity = " ".join(split.words[i][start:end])
                ax.set_title(f"{split.words[i][word]} ({entity} → {kind})" if end - start > 1
                             else f"{entity} → {kind}", fontsize=9)
        ax = axes[row][columns - 1]
        ax.axis("off")
        p = f"p = {float(output.match_prob[row]):.2f}" if model.has_p else "no CM: p not computed"
        lines = [f"id {image_id}   {p}"]
        note = (annotations or {}).get(image_id)
        if note:
            lines.append(f"image: {note.get('image_class')} ({note.get('relation')})")
        if len(maps[row]) > pictures:
            lines.append(f"not drawn: {', '.join(split.words[i][w] for *_, w in maps[row][pictures:])}")
        lines.append("")
        for word, predicted, gold in zip(split.words[i], tags + ["O"] * len(split.words[i]), split.labels[i]):
            mark = "" if predicted == gold else f"   (gold {gold})"
            lines.append(f"{word:<16} {predicted}{mark}")
        ax.text(0, 1, "\n".join(lines[:22]), va="top", family="monospace", fontsize=8, transform=ax.transAxes)
    if heat is not None:  # under the last tweet's text: an inset, which tight_layout leaves alone
        bar = fig.colorbar(heat, cax=axes[-1][-1].inset_axes([0.0, 0.02, 0.9, 0.05]), orientation="horizontal")
        bar.set_ticks([0, 1 / regions, top], labels=["0", f"uniform 1/{regions}", f"{top:.3f}"])
        bar.set_label("attention, one scale for every map", fontsize=8)
    kind = model.attention_name
    fig.suptitle(f"{run.name}: {kind} attention of each word of each predicted entity over the {grid}×{grid} "
                 "regions", fontsize=11)
    return _save(plt, fig, out / "cases.png", dpi=100)


def write_figures(run_dirs: list[str | Path], out: str | Path, case_run: str | Path | None = None,
                 ids: list[str] | None = None, count: int = 4, images_dir: str | Path | None = None,
                 annotations: str | Path | None = None, features: str | Path | None = None,
                 text: str | Path | None = None) -> dict[str, Path]:
    """All figures for these runs into OUT; returns {figure: path} of those written.
    `features`, `text`: the store and text of the runs where they are now, if moved."""
    runs = load_runs(run_dirs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if annotations is None:  # the sample corpus keeps them beside its splits
        annotations = corpus_annotations(read_meta(RunDirectory(runs[0].path).data("text_dir", text)))
    notes = read_annotations(Path(annotations) if annotations else None)
    written = {"curves": curves(runs, out), "types": type_bars(runs, out), "match": match_histogram(runs, out, notes)}
    written["corpus"] = out / "corpus.txt"
    written["corpus"].write_text(corpus_summary(runs) + "\n", encoding="utf-8")
    if notes and all(r.report and "test" in r.report for r in runs):
        written["comparison"] = out / "comparison.txt"
        written["comparison"].write_text(comparison_table(runs, notes) + "\n", encoding="utf-8")
    visual = [r for r in runs if not r.text_only]
    target = next(
        (r for r in visual if case_run and Path(case_run).resolve() in (r.path.resolve(), r.path.parent.resolve())),
        visual[0] if visual else None,
    )
    if target is not None:
        written["cases"] = case_study(target, out, ids, count, Path(images_dir) if images_dir else None, notes,
                                      features, text)
    return {k: v for k, v in written.items() if v is not None}
