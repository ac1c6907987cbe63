# Developer and user entry points. Every target sets up .venv first when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo serve setup test test-fast lint docs bench gpu-check device-wheels weights extract train evaluate clean

setup: $(STAMP)

# The whole pipeline on the bundled sample (see README); DEMO_ARGS e.g. --device cuda.
demo: $(STAMP)
	$(BIN)/masn demo $(DEMO_ARGS)

# The web app on the demo's outputs (make demo first) or on yours: make serve STORE=features/x.h5
# RUNS="runs/a runs/b" [SERVE_ARGS="--port 8080"]; it prints its URL (127.0.0.1 by default).
STORE ?= demo/features.h5
RUNS ?= $(wildcard demo/runs/*)
serve: $(STAMP)
	$(BIN)/masn serve --store $(STORE) $(if $(RUNS),--run $(RUNS)) $(SERVE_ARGS)

# Reinstall only when the dependency files change; a stamp makes repeated runs instant.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# Whole test files on TEST_WORKERS processes of one thread each (module fixtures are built once).
TEST_WORKERS ?= 2
PYTEST = $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The documentation site (mkdocs.yml, docs/) into site/, failing on any broken link or anchor;
# nothing is fetched. NO_MKDOCS_2_WARNING: no notice about MkDocs 2.0 (we pin 1.6).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

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

# For a GPU machine that has its own CUDA PyTorch and no package index (a cluster node, an NGC
# container): masn and the packages such a machine lacks, as wheels in .whl/ for its Python.
# There: python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl, then
# PYTHONPATH=/tmp/site python3 -m masn doctor --device cuda (docs/gpu.md).
WHEELS_PYTHON ?= 3.12
WHEELS = av dacite tyro docstring_parser typeguard
device-wheels: $(STAMP)
	rm -rf .whl && mkdir .whl
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir .whl .
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: -c constraints.txt \
		--python-version $(WHEELS_PYTHON) --implementation cp --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $(WHEELS)
	@du -sh .whl

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build site *.egg-info .whl
