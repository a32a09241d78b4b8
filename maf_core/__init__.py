"""The MAF model, its trainer, prediction and reports: BERT + precomputed ResNet features +
cross-modal alignment (CA), interaction (CI), matching (CM) and fusion (CF) + CRF.

Training reads image features from the feature store; the ResNet is loaded only to extract
new images at prediction time (`maf predict --images`) and by the online baseline
(`maf train --images`), both through `pipeline`.
"""
from maf_core.config import MAFConfig
from maf_core.model import MAF, MAFOutput, count_parameters

__all__ = ["MAF", "MAFConfig", "MAFOutput", "count_parameters"]
