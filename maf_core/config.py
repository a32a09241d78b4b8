"""MAFConfig, one dataclass that rebuilds the model (saved with every checkpoint as JSON), and
TrainConfig, the training settings a run records; their presets and the values each setting accepts."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace

from pipeline.errors import DataError

# Random-init BERT sizes (the offline stand-ins); `base` is BERT-base's shape.
BERT_SIZES = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
PRESETS = ("paper", "released-code", "recommended")
LOSS_WEIGHTINGS = ("paper", "released-code")
NEGATIVES = ("pairs", "tail")
CHOICES = {  # setting -> the values it accepts
    "negatives": NEGATIVES, "loss_weighting": LOSS_WEIGHTINGS, "ner_pairs": ("swapped", "true"),
    "matching_head": ("linear", "bilinear"), "swap": ("c", "image"), "matching_positions": ("real", "all"),
    "interaction_activation": ("relu", "gelu"), "init": ("default", "bert"), "dropout_on": ("emissions", "text"),
    "crf_over": ("words", "pieces"), "pooling": ("auto", "pooler", "first", "mean"),
    "char_encoder": (None, "cnn", "lstm"),
}
# training settings of TrainConfig (below) that the presets set
OPTIMIZERS = ("adamw", "bertadam", "sgd")
BATCHINGS = ("length", "random")
# the extra CRF states of crf_over="pieces" (the released code's label list): continuation
# pieces, [CLS], [SEP], and the padding label 0 that it also gives the CRF
PIECE_TAGS = ("X", "[CLS]", "[SEP]", "[PAD]")


@dataclass
class MAFConfig:
    # which model the settings build (maf_core.models: each model's class checks that the config is
    # one it builds): "maf", or the baselines "umt" and "mt" (maf_core/models/umt.py), which read the
    # encoder's, the image's and the CRF's settings below and none of CA, CM or CF's. A config
    # saved before this field existed is MAF's.
    architecture: str = "maf"
    # text encoder: any pretrained Hugging Face encoder (`bert`: Hub name or local directory;
    # BERT, RoBERTa, XLM-R, BERTweet, DeBERTa ...) or a random-init BERT of `bert_size` with the
    # tokenizer's vocabulary; `bert_config` (the encoder's config, model_type included) is
    # filled in when the model is built, so a checkpoint rebuilds it without the original
    # (maf_core/encoder.py)
    bert: str | None = None
    bert_size: str = "base"
    vocab_size: int = 28996              # bert-base-cased
    pad_token_id: int = 0                # the tokenizer's padding id (a random-init BERT's padding embedding)
    bert_config: dict | None = None
    hidden_size: int = 768               # d: the encoder's width, set when the model is built
    # T_s for CA: BERT's tanh "pooler" (the paper), the "first" token's state, or the "mean" of
    # the pieces; "auto": pooler for BERT, first for encoders whose pooler is untrained or absent
    pooling: str = "auto"
    dropout: float = 0.1
    # where dropout acts: on [T; R] of each word before the tag layer ("emissions"), or on T
    # right after BERT, so that CI, CM, CF and the tag layer all see the dropped T ("text",
    # the released code, gate_cl_modeling.py:1325)
    dropout_on: str = "emissions"
    # initialisation of the layers after BERT: PyTorch's default per layer, or "bert",
    # N(0, 0.02) weights and zero biases (the released code's init_bert_weights, line 1274)
    init: str = "default"
    # image features from the store
    image_dim: int = 2048                # C, ResNet layer4 channels
    num_regions: int = 49                # 7 x 7 grid
    # CA: cross-modal alignment (paper eq. 1-3)
    alignment_hidden: int | None = None  # MLP hidden layer; None: d (768 for BERT-base, as in the paper)
    temperature: float = 0.102           # tau
    alignment_direction: float = 0.7     # lambda_c, weight of the image-to-text direction
    # CI: cross-modal interaction (eq. 4-8)
    heads: int | None = None             # m; None: the encoder's head count (12 for BERT-base, as in the paper)
    interaction_ffn: int | None = None   # None: the encoder's intermediate size (3072 for BERT-base)
    interaction_activation: str = "relu"  # of CI's feed-forward (eq. 8); the released code: gelu
    layer_norm_eps: float = 1e-5          # CI's LayerNorms; the released code: BERT's 1e-12
    # CM: cross-modal matching (eq. 9-12)
    # pairs: k random pairs swap; tail: when a batch has more than 2k rows with an image, the
    # last 2k of them swap halves (the released code; rows come in random order, see
    # maf_core/data.py, so "last" says nothing about a tweet)
    negatives: str = "pairs"
    matching_pairs: int = 15             # k
    # k is given for batches of this size; other batch sizes swap the same fraction (at batch
    # 16 the paper's k = 15 would otherwise swap 14 of 16 images). None: k pairs in any batch.
    matching_batch: int | None = 64
    # in training, does a swapped tweet learn its tags from p * (the other tweet's C)
    # ("swapped", one reading of the paper) or from p * its own C ("true")?
    ner_pairs: str = "swapped"
    # what a negative pairs T_i with: "c", the other tweet's C (the paper's wording: C^b was
    # computed with T^b, so a linear W_f on [T; C] cannot tell the pairs apart, see
    # maf_core/matching.py) or "image", C recomputed by CI from T_i and the other tweet's regions
    swap: str = "c"
    # the CM classifier: "linear", W_f on the zero-padded flatten([T; C]) (eq. 9-10), or
    # "bilinear", mean(T)^T W mean(C) + b over the real pieces (a pairwise score, which a
    # linear W_f cannot express)
    matching_head: str = "linear"
    # the linear head's positions: "real", each half of [T^a; C^b] masked by its own tweet's
    # pieces and zero beyond (so a swapped C^b brings no trace of b's length), or "all", every
    # one of max_length positions unmasked, BERT's states at padding included (the released
    # code, lines 1364-1371; every batch is then padded to max_length)
    matching_positions: str = "real"
    matching_outputs: int = 1            # 1: sigmoid of one logit; 2: softmax over two (the released code)
    max_length: int = 128                # pieces flattened by the CM classifier (zero padded)
    # CF's gate: W_gm without a bias (eq. 13 has one bias) or with one (the released code's Gate_image)
    fusion_image_bias: bool = False
    # loss (eq. 18): alpha * CA + beta * CM + (1 - alpha - beta) * NER, or the released code's
    loss_weighting: str = "paper"
    alpha: float = 0.2
    beta: float = 0.2
    # tags of the CRF, in the scheme of the tokenized text
    scheme: str = "bioes"
    tags: list[str] = field(default_factory=lambda: ["O"])
    # the CRF's sequence: the first piece of each word ("words"), or every piece with X on
    # continuation pieces and [CLS]/[SEP] labels (the released code, run_gate_cl.py 244, 369-375);
    # either way a word's tag is read at its first piece
    crf_over: str = "words"
    # ablations (paper Table 4) and the BERT-CRF baseline (Table 2), on the same code path
    use_alignment: bool = True
    use_matching: bool = True
    text_only: bool = False
    # the word-level encoders of the BiLSTM models (maf_core/models/bilstm.py), which read each word
    # and its characters instead of word pieces; the vocabularies are the train split's (filled
    # in when the model is fitted to the text), so a checkpoint rebuilds the model from the file
    word_vocab: list[str] | None = None   # words (digits read as 0), ids from 2; 0 padding, 1 unknown
    char_vocab: list[str] | None = None   # characters of those words, ids from 2
    word_dim: int = 100
    word_vectors: str | None = None       # --word-vectors FILE (GloVe / word2vec text), as given
    word_vectors_sha256: str | None = None
    char_encoder: str | None = None       # None, "cnn" (Ma & Hovy 2016) or "lstm" (Lample et al. 2016)
    char_dim: int = 30
    char_hidden: int = 30                 # CNN filters, or LSTM units per direction
    char_window: int = 3                  # CNN window
    lstm_hidden: int = 200                # word BiLSTM units per direction
    word_dropout: float = 0.5             # on the BiLSTM's input and output (and the characters')

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        problems = []
        if self.bert is None and self.bert_size not in BERT_SIZES:
            problems.append(f"bert_size {self.bert_size!r} (expected one of {', '.join(BERT_SIZES)})")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                problems.append(f"{name} {getattr(self, name)!r} (expected {' or '.join(map(str, allowed))})")
        if self.matching_head == "bilinear" and self.swap == "c":
            # C^b carries T^b through CI's residual connections: a pairwise score of T^a and C^b
            # then compares text with text, which tells any two tweets apart without the image
            problems.append("matching_head bilinear with swap c (a swapped C still carries its own tweet's "
                            "text, so the bilinear score would compare text with text; use swap image)")
        if self.matching_head == "bilinear" and (self.matching_positions != "real" or self.matching_outputs != 1):
            problems.append("matching_head bilinear takes matching_positions real and matching_outputs 1")
        if self.matching_outputs not in (1, 2):
            problems.append(f"matching_outputs {self.matching_outputs} (expected 1 or 2)")
        if self.layer_norm_eps <= 0:
            problems.append(f"layer_norm_eps {self.layer_norm_eps} (expected > 0)")
        if self.heads is not None and self.heads < 1:  # that they divide d is checked against the encoder
            problems.append(f"heads {self.heads} (expected at least 1, or unset: the encoder's head count)")
        if not 0 <= self.alignment_direction <= 1:
            problems.append(f"alignment_direction {self.alignment_direction} (expected 0..1)")
        if self.temperature <= 0:
            problems.append(f"temperature {self.temperature} (expected > 0)")
        if self.loss_weighting == "paper" and not (self.alpha >= 0 and self.beta >= 0 and self.alpha + self.beta < 1):
            problems.append(f"alpha {self.alpha} and beta {self.beta} (expected >= 0 with alpha + beta < 1)")
        if self.matching_pairs < 1:
            problems.append(f"matching_pairs {self.matching_pairs} (expected >= 1)")
        if self.matching_batch is not None and self.matching_batch < 2 * self.matching_pairs:
            problems.append(f"matching_batch {self.matching_batch} (expected >= 2 * matching_pairs)")
        if problems:
            raise ValueError("invalid MAFConfig: " + "; ".join(problems))

    @property
    def num_tags(self) -> int:
        return len(self.tags)

    @property
    def visual(self) -> bool:
        return not self.text_only

    @property
    def crf_tags(self) -> list[str]:
        """The CRF's states: the scheme's tags, and with crf_over="pieces" the PIECE_TAGS after them."""
        return list(self.tags) + (list(PIECE_TAGS) if self.crf_over == "pieces" else [])

    @classmethod
    def tiny(cls, **overrides) -> "MAFConfig":
        """Odd small sizes for tests: shape mistakes cannot hide behind equal numbers."""
        values = dict(
            bert_size="tiny", vocab_size=97, hidden_size=32, image_dim=24, num_regions=4, alignment_hidden=20,
            heads=4, interaction_ffn=40, matching_pairs=2, matching_batch=None, max_length=16, dropout=0.0,
            tags=["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"],
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MAFConfig":
        """`paper` (section 4.3), `released-code` (the authors' repository, xubodhu/MAF) or
        `recommended` (the paper with CM negatives that can be told apart); every value and
        its source: docs/model.md and docs/design.md."""
        values = dict(preset_settings(name))
        # d, m and the widths that follow d come from the encoder when the model is built
        # (maf_core/encoder.py): BERT-base gives the paper's 768, 12 heads, 3072
        size = BERT_SIZES.get(overrides.get("bert_size", "base"), BERT_SIZES["base"])
        if overrides.get("bert") is not None:
            size = BERT_SIZES["base"]
        values.update(bert_size="base", hidden_size=size["hidden_size"], max_length=128, image_dim=2048,
                      num_regions=49)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_options(cls, preset: str, no_alignment: bool = False, no_matching: bool = False, text_only: bool = False,
                     **settings) -> "MAFConfig":
        """`maf train`'s model: the preset with the settings given (None: the preset's own), then the
        ablation; a combination the model refuses is a DataError naming the flags."""
        given = {k: v for k, v in settings.items() if v is not None}
        try:
            config = cls.from_preset(preset, **given)
        except ValueError as error:  # a combination the model refuses, with its reason
            chosen = {k: v for k, v in settings.items() if k not in ("bert", "bert_size", "pooling")}
            flags = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in chosen.items() if value)
            raise DataError(f"--preset {preset} {flags}: {error}") from None
        return config.with_ablation(no_alignment, no_matching, text_only)

    def with_ablation(
        self, no_alignment: bool = False, no_matching: bool = False, text_only: bool = False
    ) -> "MAFConfig":
        return replace(self, use_alignment=self.use_alignment and not no_alignment and not text_only,
                       use_matching=self.use_matching and not no_matching and not text_only,
                       text_only=self.text_only or text_only)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "MAFConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MAFConfig fields {unknown}")
        return cls(**values)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MAFConfig":
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))


def preset_settings(name: str) -> dict:
    """The model settings a preset sets (the rest keep MAFConfig's defaults): `paper` (section 4.3),
    `released-code` (the authors' repository, xubodhu/MAF) or `recommended` (the paper with CM
    negatives that can be told apart); every value and its source: docs/model.md."""
    paper = dict(temperature=0.102, alignment_direction=0.7, negatives="pairs", matching_pairs=15,
                 loss_weighting="paper", alpha=0.2, beta=0.2, scheme="bioes")
    if name == "paper":
        return paper
    if name == "recommended":
        # negatives pair T^a with C made from b's image, a bilinear CM scores them, and the
        # tags always learn from the tweet's own image
        return dict(paper, swap="image", matching_head="bilinear", ner_pairs="true")
    if name == "released-code":
        # run_gate_cl.py defaults and gate_cl_modeling.py's MTCCMBertForMMTokenClassificationCRF:
        # temp 0.179; temp_lamb 0.7 weights the text-to-image direction (text_toimage_loss
        # anchors on the text), so lambda_c (the image-to-text weight) is 0.3; the last 16
        # rows of a batch of more than 16 swap C (k = 8, whatever the batch size); 0.62 NER +
        # 0.38 (CA + CM); BIO tags with X, [CLS], [SEP] on a CRF over every piece
        return dict(temperature=0.179, alignment_direction=0.3, negatives="tail", matching_pairs=8,
                    matching_batch=None, loss_weighting="released-code", alpha=0.38, beta=0.38, scheme="bio",
                    swap="c", matching_head="linear", ner_pairs="swapped", matching_positions="all",
                    matching_outputs=2, interaction_activation="gelu", layer_norm_eps=1e-12, init="bert",
                    dropout_on="text", fusion_image_bias=True, crf_over="pieces")
    raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")


def preset_of(config: MAFConfig) -> str | None:
    """The preset whose settings `config` has (sizes, encoder and ablations aside), or None (also
    for another model than MAF: its architecture differs from the presets')."""
    keys = ["architecture", *sorted(set().union(*(preset_settings(name) for name in PRESETS)))]
    for name in PRESETS:
        reference = MAFConfig.from_preset(name)
        if all(getattr(config, key) == getattr(reference, key) for key in keys):
            return name
    return None


DISPLAY_ONLY = ("log_every", "tensorboard")  # TrainConfig fields a resumed run may change


@dataclass
class TrainConfig:
    epochs: int = 24
    batch_size: int = 64
    eval_batch_size: int = 64
    lr: float = 5e-5
    head_lr: float | None = None  # learning rate of everything but BERT (CA, CI, CM, CF, emissions, CRF); None = lr
    weight_decay: float = 0.01
    warmup: float = 0.1          # fraction of all steps, linear warm-up, then linear decay to 0
    clip: float = 1.0            # gradient norm: global (adamw), or of each tensor (bertadam)
    seed: int = 1
    device: str = "auto"
    amp: bool | None = None      # bf16 autocast; None = the model's default on CUDA, off for CPU: models.uses_amp
    # adamw: AdamW with linear_schedule; bertadam: the released code's optimizer and schedule;
    # sgd: SGD with `momentum`, the rate lr / (1 + lr_decay * epoch) (the BiLSTM models' recipes)
    # (maf_core/optim.py)
    optimizer: str = "adamw"
    momentum: float = 0.0        # sgd only
    lr_decay: float = 0.0        # sgd only: lr_t = lr / (1 + lr_decay * t), t the epochs done (Ma & Hovy 2016)
    # length: batches of tweets of similar length, rows in random order inside (less padding);
    # random: random batches (the released code's RandomSampler)
    batching: str = "length"
    log_every: float = 30.0      # seconds between progress lines where stderr is not a terminal
    tensorboard: bool = True     # TensorBoard event files in RUN/tb/ (maf_core/board.py)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise DataError(f"optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if self.batching not in BATCHINGS:
            raise DataError(f"batching {self.batching!r}: expected one of {', '.join(BATCHINGS)}")
