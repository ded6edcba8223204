import pytest
from safetensors.torch import load_file

from xaibench.tools import train as T
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
    with pytest.raises(UserError, match="Valid model configs"):
        T.train("nosuchmodel")


def test_training_writes_to_an_output_folder_by_default_and_loads_as_trained(tmp_path, monkeypatch):
    """xaibench-train never overwrites the shipped weights unless asked (ship=true)."""
    import sys

    from xaibench import models as M

    monkeypatch.setattr(T, "accuracy", lambda adapter, ds, batch_size=64: 0.0)
    monkeypatch.chdir(tmp_path)
    shipped = {p.name: p.stat().st_mtime_ns for p in M.WEIGHTS_DIR.iterdir()}
    monkeypatch.setattr(T, "train", lambda *a, **k: _train_small(*a, **k))
    monkeypatch.setattr(sys, "argv", ["xaibench-train", "model=vit_synth", "train.steps=1"])
    T.main()
    out = tmp_path / "outputs" / "train" / "vit_synth"
    assert (out / "vit_synth.safetensors").exists() and (out / "models.csv").exists()
    assert {p.name: p.stat().st_mtime_ns for p in M.WEIGHTS_DIR.iterdir()} == shipped
    adapter = M.create("trained", path=str(out / "vit_synth.safetensors"))
    assert adapter.name == "vit_synth" and adapter.num_classes == 4
    with pytest.raises(UserError, match="safetensors"):
        M.create("trained", path=str(out))


_real_train = T.train


def _train_small(name, **kw):
    return _real_train(name, overrides={"config": {"image_size": 64, "patch_size": 8, "hidden_size": 16,
                                                   "num_hidden_layers": 1, "num_attention_heads": 2,
                                                   "intermediate_size": 32}, "batch_size": 4}, **kw)


def test_bad_train_options_are_clear_errors(monkeypatch, capsys):
    import sys

    for argv, needle in ((["model=vit_synth", "ship=maybe"], "ship"), (["model=vit_synth", "bogus=1"], "unknown"),
                         (["model=vit_synth", "ship=true", "out=x"], "either")):
        monkeypatch.setattr(sys, "argv", ["xaibench-train"] + argv)
        with pytest.raises(SystemExit) as e:
            T.main()
        assert e.value.code == 2 and needle in capsys.readouterr().err
