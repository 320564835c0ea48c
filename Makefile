# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv (CPU torch 2.13.0 + this project) on first use and are no-ops for set-up afterwards.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: setup demo test bench-sdf clean sysdeps

setup: $(STAMP)

# open3d's wheel links libusb-1.0, which minimal Debian/Ubuntu images lack.
sysdeps:
	@ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || { \
	  echo "installing libusb-1.0 (needed by open3d)"; \
	  $(SUDO) apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q libusb-1.0-0 >/dev/null; }; }

$(STAMP): pyproject.toml | sysdeps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/fieldstudio demo

test: setup
	$(PY) -m pytest -q

bench-sdf: setup
	$(PY) scripts/bench_sdf.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
