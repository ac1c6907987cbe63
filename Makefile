# Developer and user entry points. Every target sets up .venv first when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo setup test test-fast lint bench gpu-check weights extract train evaluate clean

setup: $(STAMP)

# The whole pipeline on the bundled sample (see README); DEMO_ARGS e.g. --device cuda.
demo: $(STAMP)
	$(BIN)/masn demo $(DEMO_ARGS)

# Reinstall only when the dependency files change; a stamp makes repeated runs instant.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The paper's weights (VG detector, I3D, ResNet-152, GloVe 42B): downloaded, verified, converted.
weights: $(STAMP)
	$(BIN)/masn weights fetch $(NAMES)

# make extract DATASET=msvd VIDEOS=/data/msvd/videos [OUT=features/msvd.h5] [ARGS=...]
DATASET ?= folder
OUT ?= features/$(DATASET).h5
extract: $(STAMP)
	@test -n "$(VIDEOS)" || { echo "usage: make extract DATASET=msvd VIDEOS=/path/to/videos"; exit 2; }
	$(BIN)/masn extract --dataset $(DATASET) --videos $(VIDEOS) --out $(OUT) $(ARGS)

# make train TASK=frameqa [ANNOTATIONS=data/tgif-qa] [FEATURES=features/tgif.h5] [RUN=runs/frameqa]
#            [GPUS=8] [ARGS="--resume ..."]; make evaluate TASK=frameqa [RUN=...] [ARGS=...]
TASK ?= frameqa
RUN ?= runs/$(TASK)
LAUNCH = $(if $(GPUS),$(BIN)/torchrun --standalone --nproc-per-node=$(GPUS),)
train: $(STAMP)
	$(LAUNCH) $(BIN)/masn train --task $(TASK) --out $(RUN) \
		$(if $(ANNOTATIONS),--annotations $(ANNOTATIONS)) $(if $(FEATURES),--features $(FEATURES)) $(ARGS)

evaluate: $(STAMP)
	$(BIN)/masn evaluate --checkpoint $(RUN)/best.pt $(ARGS)

bench: $(STAMP)
	$(BIN)/masn bench model
	$(BIN)/masn bench train
	$(BIN)/masn bench extract
	$(BIN)/masn bench memory

# The install and the GPU checked, then measured against the targets at the paper's sizes: one
# JSON, also written to bench/results/. DEVICE=cpu runs the same code with small sizes.
DEVICE ?= cuda
gpu-check: $(STAMP)
	$(BIN)/masn doctor --device $(DEVICE)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
