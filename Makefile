# maf: `make demo` runs the main job on the sample corpus, offline; `make test` runs the tests.
# Everything installs itself into .venv (created if absent); a second `make install` is quick.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.maf-installed
# torch and torchvision are pinned: these two releases install from local disk here.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO := demo

.PHONY: install test test-fast demo clean-demo

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[test]' $(TORCH_PINS)
	touch $(STAMP)

# all tests, the slower marked ones included (pytest exits non-zero when it collects none)
test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# The main job, as far as it exists today: sample corpus -> vocabulary -> tokenized text -> image features.
# Steps already done are reused (delete $(DEMO)/ or run `make clean-demo` to start over).
demo: install
	@if [ -f $(DEMO)/data/train.txt ]; then echo "[demo] sample corpus: reusing $(DEMO)/data"; \
	else $(BIN)/maf-pipe make-sample $(DEMO)/data --tweets 1200 --seed 0; fi
	@if [ -f $(DEMO)/tokenizer/vocab.txt ]; then echo "[demo] vocabulary: reusing $(DEMO)/tokenizer"; \
	else $(BIN)/maf-pipe build-vocab $(DEMO)/data --out $(DEMO)/tokenizer --vocab-size 4000; fi
	@if [ -f $(DEMO)/text/meta.json ]; then echo "[demo] tokenized text: reusing $(DEMO)/text"; \
	else $(BIN)/maf-pipe tokenize $(DEMO)/data --tokenizer $(DEMO)/tokenizer --out $(DEMO)/text; fi
	@if [ -f $(DEMO)/store.h5 ]; then echo "[demo] image features: reusing $(DEMO)/store.h5"; \
	else echo "[demo] image features: ResNet-152 with RANDOM weights and AdaBN statistics (offline demo;" \
	     "real runs pass --weights resnet152-b121ed2d.pth or imagenet)"; \
	     $(BIN)/maf-pipe extract-images $(DEMO)/data/images --ids-from $(DEMO)/data --out $(DEMO)/store.h5 \
	         --weights none --bn-stats dataset --bn-samples 128; fi
	@echo "[demo] done: corpus in $(DEMO)/data, tokenized text in $(DEMO)/text, image features in $(DEMO)/store.h5"
	@echo "[demo] training comes with the trainer stage"

clean-demo:
	rm -rf $(DEMO)
