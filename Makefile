# pricer: the two commands a fresh machine needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU machines have a local CPU build of torch 2.13.0; a GPU image keeps its own torch
# (set TORCH_SPEC= to skip: the venv then sees the system's packages, torch included).
# Never an open range: that would pull a multi-GB CUDA wheel.
TORCH_SPEC ?= torch==2.13.0
VENV_FLAGS := $(if $(TORCH_SPEC),,--system-site-packages)
RUNTIME := $(VENV)/.installed-runtime
STAMP  := $(VENV)/.installed
DEMO_OUT ?= runs/demo

.PHONY: install test demo clean-demo

# What pricer itself needs (the demo stops here) ...
$(RUNTIME): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install -q -r requirements.txt
	@touch $(RUNTIME)

# ... and what the tests and benchmarks add: the reference stack (peft, trl), scikit-learn, hypothesis.
$(STAMP): $(RUNTIME) requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(RUNTIME)
	$(BIN)/python demo.py --out $(DEMO_OUT)

clean-demo:
	rm -rf $(DEMO_OUT)
