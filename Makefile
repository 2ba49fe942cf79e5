# `make demo`: set up and run the quickstart. `make test`: set up and run the default test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Installed without their dependencies (pyproject's `libero` and `pusht` extras list what they need instead).
NODEPS := hf-libero==0.1.4 robosuite==1.4.0 bddl==1.0.1 gym-pusht==0.1.8

.PHONY: demo test test-slow test-browser test-lerobot smoke release bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all,test]'
	$(BIN)/python -m pip install -q --no-deps $(NODEPS)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vlaforge quickstart --output_dir=runs/quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -rs -m slow

# The pages in a real headless browser: Debian's chromium, driving the human-eval app through
# Playwright and rendering the serving dashboard.
test-browser: $(STAMP)
	command -v chromium >/dev/null || apt-get install -y -q chromium
	$(BIN)/python -m pip install -q -e '.[browser]'
	$(BIN)/python -m pytest -q tests/test_human_eval.py tests/test_dashboard.py -k "browser or chromium" -rs

# CI's smoke job: the whole pipeline at a tiny size (collect, train, evaluate, report) in minutes.
smoke: $(STAMP)
	$(BIN)/vlaforge quickstart --output_dir=runs/smoke --collect.env.tasks=[reach] --collect.episodes_per_task=5 \
		--train.steps=50 --train.grounding_scenes=0 --eval.episodes=5 --splits=[train]

# CI's release job: train, evaluate and time a small policy, then promote it only through the gate
# (.ci/release; RELEASE_* variables size it). Fails when the gate refuses the challenger.
release: $(STAMP)
	.ci/release

# Interop with the real lerobot, which pins an older torch: its own environment, our tests pointed at it.
LEROBOT_VENV := .venv-lerobot
test-lerobot: $(STAMP)
	test -x $(LEROBOT_VENV)/bin/python || $(PY) -m venv $(LEROBOT_VENV)
	$(LEROBOT_VENV)/bin/python -m pip install -q lerobot==0.4.4
	VLAFORGE_LEROBOT_PYTHON=$(LEROBOT_VENV)/bin/python $(BIN)/python -m pytest -q -rs tests/test_lerobot_fixture.py

bench: $(STAMP)
	$(BIN)/python benchmarks/render_fps.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/quickstart.py

clean:
	rm -rf runs $(VENV) $(LEROBOT_VENV)
