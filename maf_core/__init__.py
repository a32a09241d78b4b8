"""The MAF model, its trainer, prediction and reports: BERT + precomputed ResNet features +
cross-modal alignment (CA), interaction (CI), matching (CM) and fusion (CF) + CRF.

Training reads image features from the feature store; the ResNet is loaded only to extract
new images at prediction time (`maf predict --images`) and by the online baseline
(`maf train --images`), both through `pipeline`.
"""
from maf_core.config import MAFConfig

__all__ = ["MAF", "MAFConfig", "MAFOutput", "count_parameters"]


def __getattr__(name: str):
    # the model (and torch with it) loads on first use, so that `maf --help` and the CLI's
    # option choices (maf_core.config) do not wait for torch
    if name in ("MAF", "MAFOutput", "count_parameters"):
        from maf_core import model

        return getattr(model, name)
    raise AttributeError(f"module 'maf_core' has no attribute {name!r}")
