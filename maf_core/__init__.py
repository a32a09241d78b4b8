"""The MAF model and its trainer (BERT + cached ResNet features + CA, CI, CM, CF + CRF)."""
