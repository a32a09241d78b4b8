"""The model registry: one lookup from a model's name to its class (maf_core/models/registry.py), each
class saying what differs about its model, and no branch on a model's name anywhere else."""
from __future__ import annotations

import ast
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import make_batch

from maf_core.config import MAFConfig
from maf_core.models import (
    ARCHITECTURES,
    FAMILIES,
    MODEL_KEYS,
    MODELS,
    UMT,
    build_model,
    count_parameters,
    default_config,
    fit_to_text,
    load_model,
    model_class,
)
from maf_core.models.base import INPUT_KEYS
from maf_core.models.umt import umt_settings

ROOT = Path(__file__).resolve().parents[1]
REGISTRY_PACKAGE = ROOT / "maf_core" / "models"
SCANNED = ("maf_core", "cli", "pipeline")
BIO = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
# `architecture == "x"`, `architecture != 'x'`, `architecture in (...)` written out in the source
_NAME_TEST = re.compile(r"architecture\s*(==|!=)\s*[\"']|architecture\s+(not\s+)?in\s*[(\[{]")


def _names(node: ast.AST) -> list[str]:
    """The string constants of a node: itself, or the elements of a tuple, list or set literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [n for element in node.elts for n in _names(element)]
    return []


def _identifier(node: ast.AST) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def name_branches(source: str, where: str) -> list[str]:
    """Places in `source` that decide something by a model's name: a comparison with a registered
    name, a dict keyed by one, `.get("architecture", default)`, or isinstance against a model class."""
    names, classes = set(ARCHITECTURES), {cls.__name__ for cls in MODELS.values()}
    found = []
    for node in ast.walk(ast.parse(source)):
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Compare):
            if any(n in names for side in [node.left, *node.comparators] for n in _names(side)):
                found.append(f"{line}: compares with a model's name")
        elif isinstance(node, ast.Dict):
            if any(n in names for key in node.keys if key is not None for n in _names(key)):
                found.append(f"{line}: a dict keyed by model names")
        elif isinstance(node, ast.Call):
            func = _identifier(node.func)
            if func == "get" and node.args and _names(node.args[0]) == ["architecture"]:
                found.append(f"{line}: reads the architecture with its own default")
            if func == "isinstance" and len(node.args) == 2:
                second = node.args[1]
                targets = second.elts if isinstance(second, ast.Tuple) else [second]
                if any(_identifier(t) in classes for t in targets):
                    found.append(f"{line}: isinstance against a model class")
    found += [f"{where}:{source.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"
              for m in _NAME_TEST.finditer(source)]
    return found


def tiny_config(name: str, **overrides) -> MAFConfig:
    """The model's default settings at MAFConfig.tiny's sizes."""
    kept = ("architecture", "use_alignment", "use_matching", "text_only", "scheme", "crf_over", "init", "dropout_on",
            "pooling", "interaction_activation", "layer_norm_eps")
    default = default_config(name)
    tags = BIO if default.scheme == "bio" else MAFConfig.tiny().tags
    config = MAFConfig.tiny(**{**{k: getattr(default, k) for k in kept}, "tags": tags, **overrides})
    # the word-level models' vocabularies, of a few of make_batch's words
    return fit_to_text(replace(config, char_encoder=default.char_encoder), [["abc", "ABC", "a0"], ["de", "E"]])


def test_the_name_check_finds_each_kind_of_branch():
    """The scan below can fail: each kind of branch it looks for, written out, is found."""
    snippets = {
        'if config.architecture == "maf":\n    pass\n': "compares",
        'x = 1 if model.config.architecture != "maf" else 2\n': "compares",
        'if name in ("umt", "mt"):\n    pass\n': "compares",
        'NAMES = {"maf": "MAF", "umt": "UMT-BERT-CRF"}\n': "dict keyed",
        'trained_as = saved["model"].get("architecture", "maf")\n': "own default",
        'if isinstance(model, MAF):\n    pass\n': "isinstance",
        'spans = config.architecture in (first, second)\n': "architecture in",
    }
    for source, kind in snippets.items():
        found = name_branches(source, "snippet.py")
        assert found and any(kind in f for f in found), (source, found)
    assert name_branches('if preset == "paper" and split in ("valid", "test"):\n    pass\n', "ok.py") == []


def test_no_branch_on_a_model_name_outside_the_registry_package():
    files = [path for package in SCANNED for path in sorted((ROOT / package).rglob("*.py"))
             if REGISTRY_PACKAGE not in path.parents]
    assert len(files) > 40  # the scan reads the code base, not an empty folder
    found = [f for path in files for f in name_branches(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert found == [], "ask the model's class (maf_core.models) instead:\n" + "\n".join(found)


def test_one_lookup_from_each_name_to_its_class():
    assert ARCHITECTURES == tuple(cls.name for cls in FAMILIES) and set(ARCHITECTURES) == set(MODELS)
    assert ARCHITECTURES[0] == "maf"  # maf train's default
    for name in ARCHITECTURES:
        cls = model_class(name)
        assert cls.name == name and cls.title and cls.card and cls.card_tags and cls.recipe and cls.options
        assert set(cls.inputs) <= set(INPUT_KEYS) and ("pieces" in cls.inputs) != ("words" in cls.inputs)
        assert {key for kind in cls.inputs for key in INPUT_KEYS[kind]} <= set(MODEL_KEYS)
        assert default_config(name).architecture == name
    with pytest.raises(ValueError, match=r"architecture 'lstm' is not a model this version knows "
                                         r"\(maf, umt, mt, bert-softmax, bilstm-crf, "
                                         r"cnn-bilstm-crf, hbilstm-crf, gvatt-bert-crf, adacan-bert-crf, "
                                         r"gvatt-hbilstm-crf, adacan-cnn-bilstm-crf\)"):
        model_class("lstm")


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_each_model_counts_its_own_parameters_and_says_whether_it_has_p(name):
    torch.manual_seed(0)
    model = build_model(tiny_config(name))
    counts = count_parameters(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    batch = make_batch(model.config, batch=3, seed=1)
    with torch.no_grad():
        out = model.eval()(**{k: batch[k] for k in MODEL_KEYS})
    assert model.has_p == (out.match_prob is not None)
    assert (out.attention is None) == (model.attention_name is None)


def test_a_umt_saved_with_its_earlier_layer_names_still_loads(tmp_path):
    """UMT's layers were its own Attention + TransformerLayer (X.attention.query, X.attention_output);
    they are now maf_core.interaction.BertLayer, CI's layer (X.query, X.output): a run saved before
    loads with the same outputs."""
    torch.manual_seed(0)
    model = build_model(MAFConfig.tiny(**umt_settings("umt"), tags=BIO)).eval()
    model.save_pretrained(tmp_path / "new")
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "new" / "model.safetensors")
    old = {re.sub(r"\.output\.", ".attention_output.", re.sub(r"\.(query|key|value)\.", r".attention.\1.", k))
           if k.split(".")[0] in ("text_attention", "text_to_image", "image_to_text", "text_to_text", "span_attention")
           else k: v for k, v in state.items()}
    assert "text_attention.attention.query.weight" in old and "text_attention.attention_output.bias" in old
    (tmp_path / "old").mkdir()
    save_file(old, tmp_path / "old" / "model.safetensors")
    (tmp_path / "old" / "config.json").write_text((tmp_path / "new" / "config.json").read_text())
    again = load_model(tmp_path / "old")
    batch = make_batch(model.config, batch=3, seed=2)
    inputs = {k: batch[k] for k in MODEL_KEYS}
    with torch.no_grad():
        assert torch.equal(model(**inputs).emissions, again(**inputs).emissions)
    assert isinstance(again, UMT)


def test_a_config_without_an_architecture_is_maf(tmp_path):
    """Runs from before the name was recorded: config.json without "architecture" loads as MAF."""
    torch.manual_seed(0)
    model = build_model(MAFConfig.tiny()).eval()
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    del config["architecture"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert type(load_model(tmp_path / "m")).__name__ == "MAF"
