"""MAF under its earlier import path (`from maf_core.model import MAF`, as the model cards of saved
runs say): the model lives in maf_core/models/maf.py, what every model shares in maf_core/models/base.py."""
from maf_core.models.base import (
    FEATURE_KEYS,
    MODEL_KEYS,
    MAFOutput,
    SavedModel,
    bert_init,
    gather_words,
    piece_targets,
    word_paths,
)
from maf_core.models.maf import CARD_TAGS, MAF, MODEL_CARD, count_parameters

__all__ = ["CARD_TAGS", "FEATURE_KEYS", "MAF", "MODEL_CARD", "MODEL_KEYS", "MAFOutput", "SavedModel", "bert_init",
           "count_parameters", "gather_words", "piece_targets", "word_paths"]
