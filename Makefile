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
# What a fresh clone installs is what CI tested: requirements.lock (runtime), requirements-dev.lock
# (runtime + tests) and requirements-invariants.lock (tests without peft/trl) pin every package with its
# sha256, resolved by uv from the ranges in requirements*.txt and the pins in lock-pins.txt (`make lock`
# regenerates all three). A GPU image
# (TORCH_SPEC=) keeps its own torch and installs the ranges instead: its torch is not the lock's.
UV_SPEC ?= uv==0.13.9
LOCK_OPTS := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links /opt/wheels \
	--generate-hashes --no-header -c lock-pins.txt
LATEST ?= .venv-latest
INVARIANTS ?= .venv-invariants

.PHONY: install test demo clean-demo lock test-latest test-invariants

define install_from
	@test -x $(1)/bin/python || $(PYTHON) -m venv $(VENV_FLAGS) $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(1)/bin/python -m pip install -q --require-hashes -r $(2),$(1)/bin/python -m pip install -q -r $(3))
endef

# What pricer itself needs (the demo stops here) ...
$(RUNTIME): requirements.lock requirements.txt
	$(call install_from,$(VENV),requirements.lock,requirements.txt)
	@touch $(RUNTIME)

# ... and what the tests and benchmarks add: the reference stack (peft, trl), scikit-learn, hypothesis.
$(STAMP): $(RUNTIME) requirements-dev.lock requirements-dev.txt
	$(call install_from,$(VENV),requirements-dev.lock,requirements-dev.txt)
	@touch $(STAMP)

install: $(STAMP)

# Regenerate the locks from the ranges (the one documented command; commit what it writes).
lock:
	@test -x .venv-uv/bin/uv || ($(PYTHON) -m venv .venv-uv && .venv-uv/bin/python -m pip install -q "$(UV_SPEC)")
	.venv-uv/bin/uv pip compile requirements-dev.txt $(LOCK_OPTS) -o requirements-dev.lock
	.venv-uv/bin/uv pip compile requirements.txt $(LOCK_OPTS) -c requirements-dev.lock -o requirements.lock
	.venv-uv/bin/uv pip compile requirements-invariants.txt $(LOCK_OPTS) -c requirements-dev.lock -o requirements-invariants.lock

# The suite on the newest releases the ranges admit today, in a venv of its own (the lock is untouched).
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q $(if $(TORCH_SPEC),"$(TORCH_SPEC)") -r requirements-dev.txt
	$(LATEST)/bin/python -m pip list 2>/dev/null | grep -iE "^(torch|transformers|accelerate|bitsandbytes|peft|trl|datasets) "
	$(LATEST)/bin/python -m pytest -q

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The LoRA and quantization invariants (-m "not peft_parity") in a venv of their own that has no peft or trl:
# they must collect and pass where the reference stack was never installed. Needs TORCH_SPEC set (the
# default): with TORCH_SPEC= the venv sees the system's packages, peft included, and the check below stops it.
test-invariants:
	$(call install_from,$(INVARIANTS),requirements-invariants.lock,requirements-invariants.txt)
	@for m in peft trl; do if $(INVARIANTS)/bin/python -c "import $$m" 2>/dev/null; then \
		echo "$(INVARIANTS) can import $$m: the invariants must run without the reference stack"; exit 1; fi; done
	$(INVARIANTS)/bin/python -m pytest -q -m "not peft_parity" tests/test_lora_*.py tests/test_quant_*.py

demo: $(RUNTIME)
	$(BIN)/python demo.py --out $(DEMO_OUT)

clean-demo:
	rm -rf $(DEMO_OUT)
