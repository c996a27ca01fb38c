# The two set-up commands of the README: `make train` (the main job) and `make test`.
# Each creates .venv on first use and installs what it needs.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test floors install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,export]"
	@touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/kcnn train

test: $(STAMP)
	$(BIN)/ruff check kcnn tests benchmarks
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15

# The declared dependency floors, installed (uv's lowest-direct resolution) in their own
# venv and run against the model, data, training and search tests. Not part of `make test`:
# it downloads a second TensorFlow.
FLOORS := .venv-floors
floors: $(STAMP)
	$(BIN)/python -m pip install --quiet uv
	rm -rf $(FLOORS) && $(PYTHON) -m venv $(FLOORS)
	$(BIN)/uv pip install --python $(FLOORS)/bin/python --resolution lowest-direct -e ".[dev]"
	TF_CPP_MIN_LOG_LEVEL=2 $(FLOORS)/bin/python -m pytest -q -n 2 -p no:cacheprovider tests/test_layers.py \
		tests/test_blocks.py tests/test_models.py tests/test_data.py tests/test_train.py tests/test_tune.py \
		tests/test_keras_graph.py tests/test_keras_tuner.py

clean:
	rm -rf $(VENV) $(FLOORS) .pytest_cache
