PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench report-shot clean

# One set-up for every target: a virtual environment with fedsurv and its test extras.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedsurv demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# Renders the demo's report.html in headless Chromium (Debian's chromium package) to PNGs.
report-shot: $(STAMP)
	$(BIN)/fedsurv demo --in-process --out fedsurv-demo-shot > /dev/null
	bash scripts/report_shot.sh fedsurv-demo-shot/report.html

clean:
	rm -rf $(VENV) *.egg-info fedsurv-demo fedsurv-demo-shot
