"""UMT-BERT-CRF and MT-BERT-CRF under their earlier import path (`from maf_core.umt import UMT`, as the
model cards of saved runs say): they live in maf_core/models/umt.py."""
from maf_core.models.umt import (
    MT,
    SPAN_LOSS_WEIGHT,
    SPAN_MIX,
    SPAN_TAGS,
    UMT,
    UMT_CARD,
    UMTOutput,
    conversion_matrix,
    span_labels,
    span_of_states,
    span_states,
    span_tag,
    umt_settings,
)

__all__ = ["MT", "SPAN_LOSS_WEIGHT", "SPAN_MIX", "SPAN_TAGS", "UMT", "UMT_CARD", "UMTOutput", "conversion_matrix",
           "span_labels", "span_of_states", "span_states", "span_tag", "umt_settings"]
