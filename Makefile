# The two commands of the README:  `make run`  and  `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
GATE_ARGS ?=
GATE_OPTS ?=

.PHONY: run test gate bench setup clean

$(BIN)/xaibench: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/xaibench

## Set up and run the main job (the default experiment on the embedded synthetic benchmark).
run: setup
	$(BIN)/xaibench

## Set up and run the test suite.
test: setup
	$(BIN)/python -m pytest -q

## The regression gate CI runs: the main job against the committed baseline (per-sample values paired).
## GATE_ARGS go to the main job, GATE_OPTS to xaibench-gate (e.g. GATE_OPTS="--markdown gate.md").
gate: setup
	rm -rf outputs/ci_gate
	$(BIN)/xaibench hydra.run.dir=outputs/ci_gate report=false $(GATE_ARGS)
	$(BIN)/xaibench-gate outputs/ci_gate results/main_job $(GATE_OPTS)

## Speed benchmarks (figures into results/; the GPU figures only where a CUDA GPU is present).
bench: setup
	$(BIN)/python bench/bench_methods.py
	$(BIN)/python bench/bench_metrics.py
	$(BIN)/python bench/bench_main_job.py
	if $(BIN)/python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then \
		$(BIN)/python bench/bench_gpu.py --out results/bench_gpu; fi

clean:
	rm -rf outputs multirun .pytest_cache
