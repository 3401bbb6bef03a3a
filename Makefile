# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   train -> convert -> bench on the default data folder
#   make test   the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/demo
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test research-test edge-check pi-check cpu-check reproduce clean browser

# Re-installs when pyproject.toml changes. torch (only for the one-time EfficientNet-Lite weight
# imports) is pinned to the CPU build this project tests with, installed before anything can ask
# for an unpinned torch and pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[train,lite0,lite2,mobile,dev,dicom,station]"
	touch $@

install: $(VENV)/.installed

# A failed int8 verification must not hide the rest of the story: bench shows it as a row.
demo: install
	$(BIN)/edgecxr train --out $(RUN) --overwrite
	$(BIN)/edgecxr evaluate $(RUN) --json $(RUN)/test_metrics.json
	-$(BIN)/edgecxr convert $(RUN) --quantize all
	$(BIN)/edgecxr bench $(RUN) --threads 1,2

# Retrain and re-measure everything behind the README's numbers; results land in benchmarks/results/.
reproduce: install
	benchmarks/reproduce.sh

# One pytest worker per core (at most 4): most of a TensorFlow test's time is single-threaded
# tracing and conversion, so two workers on this 2-core machine cut the suite from 11 to 6 minutes.
TEST_WORKERS ?= auto
test: install browser
	$(BIN)/python -P -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --durations 10

# The station's page is tested in Debian's own headless Chromium and its chromedriver (nothing is
# downloaded at test time); CI is a fresh root machine, so they are installed here when missing.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

# The studies' tests (research/, not shipped): outside `make test`, which collects tests/ only.
research-test: install
	$(BIN)/python -m pytest research/tests

# The edge runtime in clean virtualenvs from PyPI (no TensorFlow): the base install, and
# tflite-runtime with numpy<2; and an `edgecxr bundle` installed with no network.
# EDGE_EXPORT=runs/demo/export also checks those artifacts on test/.
edge-check: install
	EDGECXR_EDGE_ENV=1 EDGECXR_EDGE_EXPORT=$(EDGE_EXPORT) $(BIN)/python -m pytest tests/test_runtime_edge_env.py tests/test_bundle.py -v

# The offline bundle on an emulated Raspberry Pi OS 64-bit (Debian bookworm arm64 under qemu, as
# root): installed with no network, then every prediction compared with x86 (docs/pi.md).
# PI_CHECK_RUN=runs/compact uses a converted run instead of a one-epoch model trained here.
pi-check: install
	BIN=$(abspath $(BIN)) tools/pi_check.sh

# The numeric tests with oneDNN held to AVX2, and the edge runtime's predictions under an emulated
# AVX2-only CPU (qemu-x86_64 -cpu Haswell) against this machine's (docs/cpu-profiles.md).
# CPU_CHECK_RUN=runs/compact uses another converted run than make demo's.
cpu-check: install
	BIN=$(abspath $(BIN)) tools/cpu_check.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
