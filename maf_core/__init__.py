"""The MAF model (and, in later stages, its trainer): BERT + precomputed ResNet features +
cross-modal alignment (CA), interaction (CI), matching (CM) and fusion (CF) + CRF.

Never loads the ResNet: image features come from the feature store.
"""
from maf_core.config import MAFConfig
from maf_core.model import MAF, MAFOutput, count_parameters

__all__ = ["MAF", "MAFConfig", "MAFOutput", "count_parameters"]
