# The two commands of the README. Each sets itself up first (apt packages when missing,
# .venv, pip packages) and stops every process it started, also on failure or Ctrl-C.
.PHONY: demo test setup lint

TURBINES ?= 300
REGIONS ?= 2
NIGHTS ?= 12
RUN_DIR ?= runs/demo

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/nacelle simulate --turbines $(TURBINES) --regions $(REGIONS) --nights $(NIGHTS) \
		--workdir $(RUN_DIR) --summary-json $(RUN_DIR)/summary.json

test: setup
	.venv/bin/ruff check .
	.venv/bin/mypy --strict wire learning
	.venv/bin/python -m pytest -n auto --dist loadfile

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
