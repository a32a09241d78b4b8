"""The MAF model, its trainer, prediction and reports: BERT + precomputed ResNet features +
cross-modal alignment (CA), interaction (CI), matching (CM) and fusion (CF) + CRF.

Training reads image features from the feature store; the ResNet is loaded only to extract
new images at prediction time (`maf predict --images`, and `maf serve` for uploaded images,
built once per server) and by the online baseline (`maf train --images`), all through
`pipeline`.

Layers: a module imports only from the rows below its own (`make lint` checks it with
import-linter; the contracts are in setup.cfg). `pipeline` never imports `maf_core` or `cli`.

    cli                       maf, maf-pipe: options -> config -> one library call -> printing
    serve                     `maf serve`: the web page and the JSON API (FastAPI), a package
                              with its own layers: app > routes_* > engine > requests,
                              batching, browse (what the page shows of a run)
    table                     `maf table`: runs laid out as the paper's Table 2, with its published rows
    report  predict  seeds    figures of finished runs; MAFPredictor; --seeds runs and summary.json
    train                     the training loop
    board  run_summary  optim  online
                              TensorBoard; the start-of-run text; optimizers and schedules;
                              the backbone in every step (the original design, a baseline)
    inputs                    what a run reads, checked against itself and against --resume
    inference                 the device, tagging and scoring a split, evaluate_run
    run                       the run directory: its files and the checks of data against it
    model  umt                MAF and UMT / MT under their earlier import paths (re-exports of models)
    images_seen               how many images of a split are readable, and what to say when a model
                              that reads images (the registry says which) saw few or none
    models                    the models, one module per family, and the one lookup from a model's name
                              to its class (models.registry); nothing outside models/ branches on a name:
      registry                  build_model, load_model, default_config, config_from_options, uses_amp ...
      maf umt bert gvatt adacan MAF (and text-only BERT-CRF); UMT-BERT-CRF and MT-BERT-CRF; BERT-softmax;
                                GVATT and AdaCAN, on BERT and on words
      bilstm                    BiLSTM-CRF, CNN-BiLSTM-CRF, HBiLSTM-CRF (words and characters), whose
                                taggers GVATT's and AdaCAN's word-level forms extend
      base                      SavedModel (save_pretrained / from_pretrained, what a model says of
                                itself), MAFOutput, MODEL_KEYS
    alignment interaction matching fusion crf encoder checkpoint data metrics
                              the model's parts (interaction: the BERT layer CI and UMT share);
                              weights files; batches; conlleval scores and the annotation
                              statistics (p per relation, AUC, image-decided)
    distributed  config       process groups; MAFConfig, TrainConfig and their choices

Using a trained model (inference, predict, report, board, serve) never imports the trainer.
"""
from maf_core.config import MAFConfig
from maf_core.models import MAF, MT, UMT, MAFOutput, build_model, count_parameters, load_model

__all__ = ["MAF", "MT", "UMT", "MAFConfig", "MAFOutput", "build_model", "count_parameters", "load_model"]
