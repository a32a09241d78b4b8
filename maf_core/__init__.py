"""The MAF model, its trainer, prediction and reports: BERT + precomputed ResNet features +
cross-modal alignment (CA), interaction (CI), matching (CM) and fusion (CF) + CRF.

Training reads image features from the feature store; the ResNet is loaded only to extract
new images at prediction time (`maf predict --images`) and by the online baseline
(`maf train --images`), both through `pipeline`.

Layers: a module imports only from the rows below its own (`make lint` checks it with
import-linter; the contracts are in setup.cfg). `pipeline` never imports `maf_core` or `cli`.

    cli                       maf, maf-pipe: options -> config -> one library call -> printing
    serve                     `maf serve`: the web page and the JSON API (FastAPI), a package
                              with its own layers: app > routes_* > engine > requests,
                              batching, browse (what the page shows of a run)
    report  predict  seeds    figures of finished runs; MAFPredictor; --seeds runs and summary.json
    train                     the training loop
    board  run_summary  optim  online
                              TensorBoard; the start-of-run text; optimizers and schedules;
                              the backbone in every step (the original design, a baseline)
    inputs                    what a run reads, checked against itself and against --resume
    inference                 the device, tagging and scoring a split, evaluate_run
    run                       the run directory: its files and the checks of data against it
    models                    the model a config describes (MAF, UMT or MT): build_model, load_model
    umt                       UMT-BERT-CRF and MT-BERT-CRF, the baselines, on MAF's parts below
    model                     MAF, MODEL_KEYS, SavedModel (save_pretrained / from_pretrained)
    alignment interaction matching fusion crf encoder checkpoint data metrics
                              the model's parts; weights files; batches; conlleval scores and
                              the annotation statistics (p per relation, AUC, image-decided)
    distributed  config       process groups; MAFConfig, TrainConfig and their choices

Using a trained model (inference, predict, report, board, serve) never imports the trainer.
"""
from maf_core.config import MAFConfig
from maf_core.model import MAF, MAFOutput, count_parameters
from maf_core.models import load_model
from maf_core.umt import UMT

__all__ = ["MAF", "UMT", "MAFConfig", "MAFOutput", "count_parameters", "load_model"]
