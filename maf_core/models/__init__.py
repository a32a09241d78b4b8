"""The models: one module per family, each a SavedModel subclass that carries what differs (its
config, inputs, p, attention, recipe, card and parameter count), and the registry, the one lookup
from a model's name to its class.

    registry    name -> class; build_model, load_model, default_config, config_from_options,
                train_config, uses_amp, computes_p, model_name, describe, model_card, count_parameters
    maf         MAF (Xu et al., WSDM 2022), and with text_only the BERT-CRF baseline
    umt         UMT-BERT-CRF and MT-BERT-CRF (Yu et al., ACL 2020)
    bert        BERT-softmax: BERT + linear + softmax, no CRF, no image (Table 2's "BERT")
    bilstm      BiLSTM-CRF, CNN-BiLSTM-CRF, HBiLSTM-CRF: on words and characters, no image
    gvatt       GVATT-BERT-CRF and GVATT-HBiLSTM-CRF (Lu et al., ACL 2018)
    adacan      AdaCAN-BERT-CRF and AdaCAN-CNN-BiLSTM-CRF (Zhang et al., AAAI 2018)
    base        SavedModel, MAFOutput, the batch keys, the CRF-over-pieces helpers
"""
from maf_core.models.adacan import AdacanBertCRF, AdacanCNNBiLSTMCRF
from maf_core.models.base import FEATURE_KEYS, MODEL_KEYS, MODELS, MAFOutput, SavedModel
from maf_core.models.bert import BertSoftmax
from maf_core.models.bilstm import BiLSTMCRF, CNNBiLSTMCRF, HBiLSTMCRF
from maf_core.models.gvatt import GvattBertCRF, GvattHBiLSTMCRF
from maf_core.models.maf import MAF
from maf_core.models.registry import (
    ARCHITECTURES,
    FAMILIES,
    build_model,
    computes_p,
    config_from_options,
    count_parameters,
    default_config,
    describe,
    fit_to_text,
    load_model,
    model_card,
    model_class,
    model_name,
    reads_images,
    saved_architecture,
    train_config,
    uses_amp,
)
from maf_core.models.umt import MT, UMT

__all__ = ["ARCHITECTURES", "FAMILIES", "FEATURE_KEYS", "MAF", "MODELS", "MODEL_KEYS", "MT", "UMT", "BertSoftmax",
           "BiLSTMCRF", "CNNBiLSTMCRF", "HBiLSTMCRF", "AdacanBertCRF", "AdacanCNNBiLSTMCRF", "GvattBertCRF",
           "GvattHBiLSTMCRF", "MAFOutput", "SavedModel", "build_model", "computes_p", "config_from_options",
           "count_parameters", "default_config", "describe", "fit_to_text", "load_model", "model_card",
           "model_class", "model_name", "reads_images", "saved_architecture", "train_config", "uses_amp"]
