"""The update's precision: timed once per machine and model shape, the faster one kept, the answer cached."""

import json

import pytest
import torch

from selfplay import precision


def test_the_probe_times_both_precisions_on_the_models_shapes(tiny_model):
    from transformers import AutoConfig

    seconds = precision.time_update(AutoConfig.from_pretrained(tiny_model))
    assert set(seconds) == {True, False} and all(0 < s < 30 for s in seconds.values())


@pytest.mark.parametrize("faster", [True, False])
def test_the_faster_precision_is_chosen_and_cached(tiny_model, tmp_path, monkeypatch, faster):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    timings = []

    def timed(config):
        timings.append(config.hidden_size)
        return {faster: 0.1, not faster: 0.2}

    monkeypatch.setattr(precision, "time_update", timed)
    cache = tmp_path / "precision.json"
    assert precision.update_in_bfloat16(tiny_model, cache=cache) is faster
    assert precision.update_in_bfloat16(tiny_model, cache=cache) is faster
    assert timings == [128]  # timed once; the second answer came from the cache
    [entry] = json.loads(cache.read_text()).values()
    assert entry == {"bf16_s": 0.1 if faster else 0.2, "fp32_s": 0.2 if faster else 0.1}


def test_a_broken_cache_is_timed_again_and_a_cpu_without_bfloat16_never_uses_it(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "time_update", lambda config: {True: 0.1, False: 0.2})
    cache = tmp_path / "precision.json"
    cache.write_text("{not json")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert precision.update_in_bfloat16(tiny_model, cache=cache) is True
    assert len(json.loads(cache.read_text())) == 1
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert precision.update_in_bfloat16(tiny_model, cache=cache) is False
