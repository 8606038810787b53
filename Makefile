# Both entry points create or reuse .venv; nothing needs to be installed by hand.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test bench bench-quality bench-quality-shop bench-quality-shop-plain clean

install: $(STAMP)

# A torch already importable by the system python (a GPU box) is kept: the venv then sees
# system site-packages; otherwise the pinned CPU build is installed first, before anything
# that depends on torch can pull an unpinned one.
$(STAMP): pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  if python3 -c 'import torch' 2>/dev/null; then python3 -m venv --system-site-packages $(VENV); \
	  else python3 -m venv $(VENV); fi; \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c 'import torch' 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/embedding-studio demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench.run

bench-quality: $(STAMP)
	$(PY) -m bench.quality --dataset "$(DATASET)"

# The demo's shop as a product-search collection (written, not downloaded): bench/results/quality-shop.json.
SHOP_DIR ?= $(HOME)/.cache/embedding-studio/shop
bench-quality-shop: $(STAMP)
	$(PY) -m simulation.shop_catalog "$(SHOP_DIR)"
	$(PY) -m bench.quality --dataset "$(SHOP_DIR)"

# The same shop, its shoppers using the catalog's own names: bench/results/quality-shop-plain.json.
SHOP_PLAIN_DIR ?= $(HOME)/.cache/embedding-studio/shop-plain
bench-quality-shop-plain: $(STAMP)
	$(PY) -m simulation.shop_catalog --plain "$(SHOP_PLAIN_DIR)"
	$(PY) -m bench.quality --dataset "$(SHOP_PLAIN_DIR)"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
