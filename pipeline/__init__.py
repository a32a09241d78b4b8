"""Offline stages of maf: read the CoNLL corpus, tokenize to Arrow, build vocabularies,
make the sample corpus, and extract image features to store.h5.

Nothing in this package imports the model (`maf_core`).
"""
from pipeline.errors import DataError

__all__ = ["DataError"]
