"""The text encoder: any Hugging Face encoder through the Auto classes (BERT, RoBERTa, XLM-R,
BERTweet, DeBERTa-v2/v3, ...), or a random-init BERT of a named size for tests and the demo.

What depends on the encoder's width comes from its own config (`fit_to_encoder`): d, CI's
attention heads (the encoder's head count unless set), CI's feed-forward width (the
encoder's intermediate size unless set) and CA's hidden layer (d unless set). T_s, the
sentence vector CA aligns with the image, is chosen by `pooling` (docs/design.md).
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from maf_core.config import BERT_SIZES, MAFConfig
from pipeline.errors import DataError
from pipeline.tokenization import load_tokenizer

logger = logging.getLogger(__name__)

# T_s by family with pooling "auto": BERT's tanh pooler was trained by next-sentence
# prediction (the paper's T_s); RoBERTa, XLM-R and BERTweet dropped that task, so their pooler
# is untrained, and DeBERTa has none: the first token's state instead
POOLER_FAMILIES = ("bert",)
# run-specific keys left out of the saved encoder config
_SKIP = ("transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype", "id2label", "label2id")


def encoder_config_dict(encoder) -> dict:
    """The encoder's config as plain JSON values (its `model_type` included), to rebuild it offline."""
    values = {k: v for k, v in encoder.config.to_dict().items() if k not in _SKIP}
    values.setdefault("model_type", encoder.config.model_type)
    return json.loads(json.dumps(values))


def resolve_pooling(pooling: str, model_type: str) -> str:
    if pooling == "auto":
        return "pooler" if model_type in POOLER_FAMILIES else "first"
    return pooling


def _model_class(encoder_config):
    from transformers import AutoModel

    try:
        return AutoModel._model_mapping[type(encoder_config)]
    except KeyError:
        raise DataError(f"encoder type {encoder_config.model_type!r} has no Hugging Face base model class") from None


def _with_pooler(model_class, pooling: str) -> dict:
    """add_pooling_layer for the classes that take it: a pooler only where T_s reads it."""
    import inspect

    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        return {"add_pooling_layer": pooling == "pooler"}
    if pooling == "pooler":
        raise DataError(f"pooling pooler: {model_class.__name__} has no pooler; use pooling first or mean")
    return {}


def _pretrained_config(name: str):
    from transformers import AutoConfig

    try:
        try:  # a directory, or a Hub name in the local cache: no network
            return AutoConfig.from_pretrained(name, local_files_only=True)
        except OSError:
            logger.info("fetching the config of %s from the Hugging Face Hub", name)
            return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise DataError(f"--bert {name}: cannot load an encoder from it ({str(err).splitlines()[0]}); pass a "
                        "local directory holding config.json and the weights, or a Hub name with network "
                        "access") from None


def build_encoder(config: MAFConfig):
    """(encoder, config fitted to it). The encoder: rebuilt from `config.bert_config` (a saved
    run), loaded from `config.bert` (pretrained), or a random-init BERT of `config.bert_size`."""
    from transformers import AutoConfig, BertConfig

    if config.bert_config is not None:
        values = dict(config.bert_config)
        try:
            encoder_config = AutoConfig.for_model(values.pop("model_type", "bert"), **values)
        except (ValueError, KeyError) as err:  # a model type this transformers does not know
            raise DataError(f"the saved text encoder cannot be rebuilt here ({str(err).splitlines()[0]}); "
                            "install the transformers version it was trained with") from None
        pooling = resolve_pooling(config.pooling, encoder_config.model_type)
        model_class = _model_class(encoder_config)
        encoder = model_class(encoder_config, **_with_pooler(model_class, pooling))
    elif config.bert is not None:
        encoder_config = _pretrained_config(config.bert)
        check_heads(config, encoder_config)  # before loading weights that would not fit
        pooling = resolve_pooling(config.pooling, encoder_config.model_type)
        model_class = _model_class(encoder_config)
        encoder = model_class.from_pretrained(config.bert, config=encoder_config,
                                              **_with_pooler(model_class, pooling))
        encoder = encoder.float()  # fp32 master weights, whatever dtype the checkpoint was saved in
    else:
        from transformers import BertModel

        pooling = resolve_pooling(config.pooling, "bert")
        encoder = BertModel(BertConfig(vocab_size=config.vocab_size, hidden_dropout_prob=config.dropout,
                                       attention_probs_dropout_prob=config.dropout, pad_token_id=config.pad_token_id,
                                       max_position_embeddings=max(512, config.max_length),
                                       **BERT_SIZES[config.bert_size]), add_pooling_layer=pooling == "pooler")
    return encoder, fit_to_encoder(config, encoder, pooling)


def fit_to_encoder(config: MAFConfig, encoder, pooling: str) -> MAFConfig:
    """A copy of `config` with d, the heads, the widths and T_s's pooling of this encoder."""
    enc = encoder.config
    width, heads = enc.hidden_size, check_heads(config, enc)
    return replace(config, hidden_size=width, heads=heads,
                   interaction_ffn=config.interaction_ffn or getattr(enc, "intermediate_size", 4 * width),
                   alignment_hidden=config.alignment_hidden or width, pooling=pooling,
                   bert_config=config.bert_config or encoder_config_dict(encoder))


def check_heads(config: MAFConfig, encoder_config) -> int:
    """CI's heads: the configured ones if they divide the encoder's width, else a DataError."""
    width, heads = encoder_config.hidden_size, config.heads or encoder_config.num_attention_heads
    if width % heads:
        source = config.bert or config.bert_size
        raise DataError(f"heads {heads}: CI's attention heads must divide the text encoder's width {width} "
                        f"({source}); leave heads unset to use the encoder's {encoder_config.num_attention_heads}")
    return heads


def describe(config: MAFConfig) -> str:
    """'bert-base-cased (pretrained)', or 'a RANDOM-init BERT-small' for a run without --bert; for
    the word-level models, their word vectors ('word vectors glove.txt (sha256 0123abcd4567)') or
    'RANDOM-init word embeddings'."""
    if config.word_vocab is not None:
        if config.word_vectors is None:
            return "RANDOM-init word embeddings"
        return f"word vectors {config.word_vectors} (sha256 {(config.word_vectors_sha256 or '?')[:12]})"
    if config.bert is not None:
        return f"{config.bert} (pretrained)"
    return f"a RANDOM-init BERT-{config.bert_size}"


def save_random_encoder(tokenizer_dir: str | Path, out: str | Path, model_type: str = "bert", width: int = 64,
                        layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """A random-init encoder of `model_type` (bert, roberta, xlm-roberta, deberta-v2, ...) sized for
    the tokenizer in `tokenizer_dir`, saved with it as a directory `--bert` loads: the offline
    stand-in for a downloaded model of that family, for tests and benchmarks."""
    import torch
    from transformers import AutoConfig, AutoModel

    tokenizer = load_tokenizer(str(tokenizer_dir))
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=layers,
                                  num_attention_heads=heads, intermediate_size=4 * width, max_position_embeddings=514,
                                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                                  eos_token_id=tokenizer.sep_token_id)
    torch.manual_seed(seed)
    out = Path(out)
    AutoModel.from_config(config).save_pretrained(str(out))
    if Path(tokenizer_dir).resolve() != out.resolve():
        for item in Path(tokenizer_dir).iterdir():
            if item.is_file() and not (out / item.name).exists():
                (out / item.name).write_bytes(item.read_bytes())
    return out
