# Set-up, the main job, the tests and the docs. Everything runs from the project's .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on the CI/dev machines' disk; on a GPU machine use e.g.
# `make install TORCH=torch==2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cu128`.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
# PyPI's torchvision is built against PyPI's CUDA torch and does not import beside the CPU torch
# above, so the one test that compares with torchvision.ops.deform_conv2d runs it in a side venv
# holding a PyPI pair that imports together (CUDA builds, which run on CPU: about 5.5 GB, ~1 min).
TV_VENV ?= .venv-torchvision
TV_PAIR ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-fast bench docs reference torchvision-venv clean

install: $(BIN)/nas

$(BIN)/nas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[test,docs]'
	touch $@

# The side venv for tests/test_primitives_deform.py's torchvision comparison. Made once and kept:
# remove .venv-torchvision (`make clean` does) to rebuild it, e.g. after changing TV_PAIR.
torchvision-venv: $(TV_VENV)/.installed

$(TV_VENV)/.installed:
	$(PYTHON) -m venv $(TV_VENV)
	$(TV_VENV)/bin/pip install --quiet $(TV_PAIR)
	touch $@

# The main job on the embedded default: local Ray, SQLite ./nas.db, CIFAR-10 from
# $NAS_DATA_DIR or the per-user cache (downloaded on first use). Without a GPU the YAML's
# `cpu` budget is chosen (about 15 minutes on 2 cores).
demo: install
	$(BIN)/nas launch search_spaces/cifar_fast.yaml

# Every test, slow ones included (real CIFAR-10, PostgreSQL when NAS_TEST_POSTGRES_URL is set);
# the 30 slowest are listed at the end, so a run says where its time goes.
test: install
	$(BIN)/pytest -q --durations=30

# The quick loop while developing: skips tests marked slow.
test-fast: install
	$(BIN)/pytest -q -m 'not slow'

# Every benchmark but the recording of the decision benchmark (1-2 hours; its own command).
bench: install
	for b in benchmarks/*.py; do [ $$b = benchmarks/record_decisions.py ] && continue; \
	  echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The docs site (docs/, mkdocs.yml) into site/; --strict: a broken link or anchor fails it, and so
# does a YAML reference older than the config classes (`make reference` rewrites it). Offline:
# no plugin fetches anything. NO_MKDOCS_2_WARNING quiets Material's banner about MkDocs 2.
docs: install
	$(BIN)/python docs/gen_reference.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

# docs/reference.md from the config classes (nas/config, nas/models/arch.py, ...).
reference: install
	$(BIN)/python docs/gen_reference.py

clean:
	rm -rf $(VENV) $(TV_VENV) *.egg-info .pytest_cache site
