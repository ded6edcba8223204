import pytest
from safetensors.torch import load_file

from xaibench.bench import train as T
from xaibench.errors import UserError

TINY = {"config": {"image_size": 64, "patch_size": 8, "num_frames": 8, "hidden_size": 16, "num_hidden_layers": 1,
                   "num_attention_heads": 2, "intermediate_size": 32}, "batch_size": 4}


def test_training_is_deterministic_from_its_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "accuracy", lambda adapter, ds, batch_size=64: 0.0)  # keep the test short
    recs = []
    for d in ("a", "b", "c"):
        seed = 1 if d == "c" else 0
        recs.append(T.train("timesformer_synth", seed=seed, steps=2, out_dir=tmp_path / d, results_csv=False,
                            overrides=TINY))
    wa, wb, wc = (load_file(str(tmp_path / d / "timesformer_synth.safetensors")) for d in "abc")
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert any((wa[k] != wc[k]).any() for k in wa)  # another seed, other weights
    assert (tmp_path / "a" / "timesformer_synth.json").exists() and recs[0]["steps"] == 2


def test_unknown_recipe_is_a_clear_error():
    with pytest.raises(UserError, match="trainable models"):
        T.train("hf_vit_tiny")
    with pytest.raises(UserError, match="valid model configs"):
        T.train("nosuchmodel")
