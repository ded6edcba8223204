"""Shared test set-up.

* Offline, one torch thread (tiny models run far faster without thread
  contention on 2 shared cores), and ``$XAIBENCH_DATA`` pointed at an empty
  temporary folder for the whole session, so the data folder of
  ``xaibench-fetch`` (default ``~/.cache/xaibench/data``) never leaks into a test.
* ``tiny_models``: one small random-init model per ``conf/model/*_tiny.yaml``,
  built through the config mechanism (``xaibench.run.plan.component``),
  with smaller sizes where the builder takes them; a family added as a new
  ``*_tiny.yaml`` joins every test parametrised by ``tiny_name`` by itself.
* ``shipped_name``: parametrises a test over ``xaibench.models.shipped_names()``.
* ``NetAdapter``: a :class:`~xaibench.models.base.ModelAdapter` around any small
  ``nn.Module`` on pixels (identity normalisation, no attention), for metric tests.
"""

import atexit
import dataclasses
import os
import shutil
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# set before any xaibench import reads it; removed when the session ends
DATA_HOME = tempfile.mkdtemp(prefix="xaibench-test-data-")
os.environ["XAIBENCH_DATA"] = DATA_HOME
atexit.register(shutil.rmtree, DATA_HOME, ignore_errors=True)
torch.set_num_threads(1)

from xaibench import models  # noqa: E402
from xaibench.run.plan import component, conf_dir  # noqa: E402
from xaibench.models.base import ModelAdapter, TokenLayout  # noqa: E402

#: smaller sizes applied where a tiny config's builder takes the parameter (never larger than the config's)
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "embed_dim": 16, "num_frames": 4}


def tiny_config_names():
    """The config names of every ``conf/model/*_tiny.yaml``."""
    return sorted(p.stem for p in (conf_dir() / "model").glob("*_tiny.yaml"))


def shipped_model_names():
    return models.shipped_names()


def small_component(name: str):
    """``component('model', name)`` with the sizes of :data:`SMALL` where its typed config has the parameter."""
    comp = component("model", name)
    if comp.name not in models.FAMILIES:  # not a random-init family: leave the config as it is
        return comp
    specs = {s.key: s for s in models.MODELS.config(comp.name).specs()}
    params = dict(comp.params)
    for key, small in SMALL.items():
        if key not in specs:
            continue
        current = params.get(key, specs[key].default)
        if not isinstance(current, int):
            continue
        value = min(small, current)
        if key == "num_frames":  # keep at least two token frames for tubelet models
            tubelet = int(params.get("tubelet_size", 1))
            if value < 2 * tubelet:
                continue
        params[key] = value
    if "embed_dim" in params and "num_heads" in specs:  # Swin: heads per stage must divide the (smaller) width
        depths = params.get("depths", specs["depths"].default if "depths" in specs else (2, 2))
        params["num_heads"] = (2,) * len(depths)
    return dataclasses.replace(comp, params=params)


@pytest.fixture(scope="session")
def tiny_models():
    """``{config name: adapter}`` for every ``*_tiny.yaml`` (session-wide; tests never change the weights)."""
    return {name: small_component(name).create() for name in tiny_config_names()}


@pytest.fixture
def tiny(tiny_models, tiny_name):
    """The tiny model of the ``tiny_name`` parameter, with a fresh output cache."""
    a = tiny_models[tiny_name]
    a.cache.clear()
    return a


@pytest.fixture(scope="session")
def shipped_models():
    """Shipped models loaded on first use: ``shipped_models(name)`` (skips when the weights are absent)."""
    cache = {}

    def get(name):
        present = all((models.WEIGHTS_DIR / f"{name}{ext}").exists() for ext in (".json", ".safetensors"))
        if not present:
            pytest.skip(f"weights of {name} are not in xaibench/models/weights (xaibench-train model={name})")
        if name not in cache:
            cache[name] = models.create(name)
        cache[name].cache.clear()
        return cache[name]

    return get


def pytest_generate_tests(metafunc):
    if "tiny_name" in metafunc.fixturenames:
        metafunc.parametrize("tiny_name", tiny_config_names())
    if "shipped_name" in metafunc.fixturenames:
        metafunc.parametrize("shipped_name", shipped_model_names())


class NetAdapter(ModelAdapter):
    """A :class:`ModelAdapter` around ``net``: ``net(view(x))`` for pixels x (B, T, C, H, W) -> logits
    (``view`` default: flatten to (B, T*C*H*W)).

    Identity normalisation, no attention; ``patch`` sets the token grid (and so the metrics' default cell).
    """

    family = "test_net"

    def __init__(self, net, frames=1, size=8, channels=3, classes=None, patch=4, view=None):
        self.view = view or (lambda x: x.flatten(1))
        g = size // patch
        super().__init__(net, name="net", layout=TokenLayout(frames=frames, stages=((g, g),), prefix=1),
                         num_frames=frames, image_size=size, patch_size=patch, mean=(0.0,) * channels,
                         std=(1.0,) * channels)
        self.channels = channels
        self._classes = classes

    @property
    def input_shape(self):
        return (self.num_frames, self.channels, self.image_size, self.image_size)

    @property
    def num_classes(self):
        if self._classes is None:
            with torch.no_grad():
                self._classes = int(self.net_out(torch.zeros(1, *self.input_shape)).shape[-1])
        return self._classes

    def net_out(self, x):
        return self.model(self.view(x))

    def _run(self, x):
        return self.net_out(x)

    def hook_points(self):
        return []


@pytest.fixture(scope="session")
def net_adapter():
    """The :class:`NetAdapter` class."""
    return NetAdapter


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test; the hub is off and no weights folder is configured."""
    import socket

    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for v in ("XAIBENCH_WEIGHTS", "XAIBENCH_HF_HOME"):
        monkeypatch.delenv(v, raising=False)


def check_explanation(e, adapter, method_name, method, passes):
    """What every explanation of every method on every model must satisfy: shapes from the adapter's layout,
    finite, not all zero, and the model passes its kind implies (controls none; a traced method one forward
    pass, plus one backward pass exactly when it asked for gradients)."""
    T = adapter.num_frames
    assert e.volume.shape == (T, adapter.image_size, adapter.image_size) and e.frame_scores.shape == (T,)
    assert e.token_map.dim() == 3 and e.token_map.shape[0] == adapter.layout.frames
    assert tuple(e.token_map.shape[1:]) in [tuple(g) for g in adapter.layout.stages]
    for t in (e.volume, e.frame_scores, e.token_map):
        assert torch.isfinite(t).all()
    assert e.volume.abs().sum() > 0
    req = method.trace_request(adapter)
    if method_name.startswith("control_"):
        assert passes == {"forward": 0, "backward": 0}
    elif req is not None:
        assert passes == {"forward": 1, "backward": int(bool(req.get("grads")))}
    return req
