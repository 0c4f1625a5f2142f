# Two commands for a newcomer (see README.md):
#   make demo   set up .venv on first use, then run the main job
#   make test   set up .venv on first use, then run every test and notebook (CI sizes)
# VENV may point elsewhere (CI caches it outside the clone, keyed by pyproject.toml's hash).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.omg_lite-$(shell $(PYTHON) -c "import hashlib;print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:12])")
OMG_LITE_SMOKE ?= 1
DEMO_OUT ?= demo_out

.PHONY: demo test setup clean

setup: $(STAMP)

# PIP_FIND_LINKS is emptied so that a locally cached CPU-only torch wheel cannot be picked up:
# it breaks torchvision (and so timm and lpips). PyPI's torch + torchvision pair runs on CPU too.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PIP_FIND_LINKS= $(BIN)/python -m pip install --quiet --upgrade pip
	PIP_FIND_LINKS= $(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.omg_lite-*
	@touch $@

demo: $(STAMP)
	$(BIN)/omg-lite demo --out $(DEMO_OUT) --overwrite

test: $(STAMP)
	OMG_LITE_SMOKE=$(OMG_LITE_SMOKE) $(BIN)/python -m pytest -q tests notebooks --nbval-lax --nbval-current-env

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
