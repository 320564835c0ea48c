# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv (CPU torch 2.13.0 + this project) on first use and are no-ops for set-up afterwards.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = "0" ] || echo sudo)

.PHONY: setup demo test bench-sdf clean sysdeps guideps

# The window's tests run on a virtual X display (Xvfb) with Mesa's software OpenGL; Qt needs these libraries
# (the list measured in ../shared/docs/gui_testing.md).
GUI_PACKAGES := xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libfreetype6 \
  fonts-dejavu-core libdbus-1-3 libxkbcommon0 libxkbcommon-x11-0 libx11-xcb1 libxcb-cursor0 libxcb-icccm4 \
  libxcb-image0 libxcb-keysyms1 libxcb-render-util0 libxcb-shape0 libxcb-randr0 libxcb-xfixes0 libxcb-sync1 \
  libxcb-xkb1
# Tests need a display: Xvfb unless one is there already.
RUN_X  := $(if $(DISPLAY),,xvfb-run -a -s "-screen 0 1280x1024x24")

setup: $(STAMP)

# open3d's wheel links libusb-1.0, which minimal Debian/Ubuntu images lack.
sysdeps:
	@ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || { \
	  echo "installing libusb-1.0 (needed by open3d)"; \
	  $(SUDO) apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q libusb-1.0-0 >/dev/null; }; }

guideps:
	@{ command -v xvfb-run >/dev/null && ldconfig -p | grep -q libxcb-cursor.so.0 && \
	   ldconfig -p | grep -q libxkbcommon-x11.so.0 && ldconfig -p | grep -q libxcb-icccm.so.4; } || { \
	  echo "installing Xvfb and Qt's system libraries (GUI tests)"; \
	  $(SUDO) apt-get install -y -q --no-install-recommends $(GUI_PACKAGES) >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && \
	    $(SUDO) apt-get install -y -q --no-install-recommends $(GUI_PACKAGES) >/dev/null; }; }

$(STAMP): pyproject.toml | sysdeps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,gui,distributed]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/fieldstudio demo

test: setup guideps
	$(RUN_X) $(PY) -m pytest -q

bench-sdf: setup
	$(PY) scripts/bench_sdf.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
