"""The report's explanation store (xaibench.analysis.gallery)."""

import re
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from xaibench.analysis.gallery import Gallery, read_gallery


def _sample(sid="clip-0", T=4, H=8, W=8, seed=0, label=2, video=True):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(T, H, W, dtype=torch.bool)
    mask[:, 2:5, 3:6] = True
    return SimpleNamespace(sample_id=sid, x=torch.rand(T, 3, H, W, generator=g), label=label, mask=mask,
                           frames=torch.tensor([t % 2 == 0 for t in range(T)]) if video else None)


def _expl(T=4, H=8, W=8, scale=1.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(volume=torch.randn(T, H, W, generator=g) * scale,
                           frame_scores=torch.rand(T, generator=g))


def test_round_trip_keeps_inputs_and_explanations(tmp_path):
    s, e1, e2 = _sample(), _expl(seed=1), _expl(seed=2)
    with Gallery(tmp_path / "gallery.h5", 2) as g:
        g.add("synthetic_video", "timesformer", s, "staa", e1)
        g.add("synthetic_video", "timesformer", s, "rollout", e2)
    (item,) = read_gallery(tmp_path / "gallery.h5")
    assert (item.dataset, item.model, item.sample_id, item.label) == ("synthetic_video", "timesformer", "clip-0", 2)
    np.testing.assert_allclose(item.x, s.x.numpy(), atol=1e-3)  # float16: 11-bit mantissa
    np.testing.assert_array_equal(item.mask, s.mask.numpy())
    np.testing.assert_array_equal(item.frames, s.frames.numpy())
    assert list(item.methods) == ["staa", "rollout"]  # the order they were added in
    for name, e in (("staa", e1), ("rollout", e2)):
        vol, scores = item.methods[name]
        ref = e.volume.numpy()
        np.testing.assert_allclose(vol, ref, atol=1e-3 * np.abs(ref).max())
        np.testing.assert_array_equal(scores, e.frame_scores.numpy())
    with h5py.File(tmp_path / "gallery.h5") as f:
        assert f["synthetic_video/timesformer/clip-0/methods/staa/volume"].dtype == np.float16


@pytest.mark.parametrize("scale", [1e-9, 1e7])
def test_tiny_and_huge_attributions_survive_float16(tmp_path, scale):
    e = _expl(scale=scale)
    with Gallery(tmp_path / "g.h5", 1) as g:
        g.add("d", "m", _sample(), "grad", e)
    vol, _ = read_gallery(tmp_path / "g.h5")[0].methods["grad"]
    ref = e.volume.numpy()
    assert np.isfinite(vol).all()
    np.testing.assert_allclose(vol, ref, rtol=0, atol=1e-3 * np.abs(ref).max())


def test_readding_overwrites_and_a_resumed_run_appends(tmp_path):
    path = tmp_path / "gallery.h5"
    with Gallery(path, 1) as g:
        g.add("d", "m", _sample(), "staa", _expl(seed=1))
    with Gallery(path, 1) as g:  # a resumed run opens the same file
        g.add("d", "m", _sample(), "staa", _expl(seed=5))
        g.add("d", "m", _sample(), "chefer", _expl(seed=6))
    (item,) = read_gallery(path)
    assert list(item.methods) == ["staa", "chefer"]
    np.testing.assert_allclose(item.methods["staa"][0], _expl(seed=5).volume.numpy(), atol=1e-2)


def test_ids_from_data_never_become_paths(tmp_path):
    ids = ["../../etc/passwd", "a/b", ".hidden", "a_b", "a b", "ünïcode"]
    with Gallery(tmp_path / "g.h5", 10) as g:
        for i, sid in enumerate(ids):
            g.add("kinetics/400", "m", _sample(sid, seed=i), "lime/v2", _expl())
    items = read_gallery(tmp_path / "g.h5")
    assert [it.sample_id for it in items] == ids  # all distinct, originals kept
    assert {it.dataset for it in items} == {"kinetics/400"} and set(items[0].methods) == {"lime/v2"}
    names = []
    with h5py.File(tmp_path / "g.h5") as f:
        f.visit(names.append)
    for full in names:
        for part in full.split("/"):
            assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", part), part
    assert not (tmp_path / "etc").exists()


def test_want_and_nothing_written_when_off(tmp_path):
    g = Gallery(tmp_path / "g.h5", 2)
    assert [g.want("d", "m", i) for i in range(4)] == [True, True, False, False]
    off = Gallery(tmp_path / "off.h5", 0)
    assert not off.want("d", "m", 0)
    off.close()
    assert not (tmp_path / "off.h5").exists()
    assert read_gallery(tmp_path / "off.h5") == []


def test_image_sample_without_frames_or_mask(tmp_path):
    s = _sample(T=1, video=False)
    s.mask = None
    with Gallery(tmp_path / "g.h5", 1) as g:
        g.add("img", "vit", s, "rollout", _expl(T=1))
    (item,) = read_gallery(tmp_path / "g.h5")
    assert item.mask is None and item.frames is None and item.x.shape == (1, 3, 8, 8)


def test_a_file_cut_by_a_kill_is_kept_aside_and_a_new_gallery_started(tmp_path):
    path = tmp_path / "gallery.h5"
    with Gallery(path, 1) as g:
        g.add("d", "m", _sample(), "staa", _expl())
    path.write_bytes(path.read_bytes()[:100])  # truncated mid-write
    with pytest.warns(UserWarning, match="could not be opened"):
        Gallery(path, 1).add("d", "m", _sample(), "rollout", _expl())
    assert (tmp_path / "gallery.h5.unreadable").exists()
    assert list(read_gallery(path)[0].methods) == ["rollout"]


# ------------------------------------------------------------------ paper figures
def test_strip_figure_frames_side_by_side_with_a_colour_bar():
    from matplotlib.colors import to_rgba

    from xaibench.analysis.figures import strip_figure

    s, e = _sample(T=4), _expl(T=4, scale=3.0)
    vol = e.volume.numpy()
    fig = strip_figure(s.x, vol, s.mask, s.frames, title="staa")
    frames, bar = fig.axes[:4], fig.axes[4]
    assert len(fig.axes) == 5  # four frames and the colour bar
    lefts = [a.get_position().x0 for a in frames]
    assert lefts == sorted(lefts) and max(a.get_position().y0 for a in frames) - \
        min(a.get_position().y0 for a in frames) < 1e-6  # one row
    assert [a.get_title() for a in frames] == ["t=0 *", "t=1", "t=2 *", "t=3"]  # evidence frames starred
    # one colour scale for the clip, in the attribution's units: the bar spans its minimum to its maximum
    np.testing.assert_allclose(bar.get_ylim(), (vol.min(), vol.max()), rtol=1e-6)
    overlay = frames[0].get_images()[1]
    assert overlay.get_clim() == pytest.approx((vol.min(), vol.max()))
    assert overlay.get_cmap().name == "jet" and overlay.get_alpha() == 0.5
    assert to_rgba(frames[0].collections[0].get_edgecolor()[0]) == to_rgba("white")  # the ground truth outline
    np.testing.assert_array_equal(overlay.get_array(), vol[0])
    # the input strip: the frames in colour, no colour bar
    assert len(strip_figure(s.x, None, s.mask, s.frames).axes) == 4


def test_export_strips_writes_png_and_pdf_per_method(tmp_path):
    from PIL import Image

    from xaibench.analysis.gallery import export_strips

    with Gallery(tmp_path / "gallery.h5", 2) as g:
        for i in range(3):
            s = _sample(sid=f"clip/{i}", seed=i)
            g.add("synthetic_video", "timesformer", s, "staa[lambda=0.5]", _expl(seed=i))
            g.add("synthetic_video", "timesformer", s, "rollout", _expl(seed=10 + i))
    files = export_strips(read_gallery(tmp_path / "gallery.h5"), tmp_path / "fig", ("png", "pdf"),
                          max_per_bench=2)
    names = sorted(str(p.relative_to(tmp_path / "fig")) for p in files)
    assert len(files) == 2 * 3 * 2  # 2 samples (of 3) x (input + 2 methods) x 2 formats
    assert all(p.parent.parent.name == "synthetic_video__timesformer" for p in files)
    assert not any("/" in p.parent.name for p in files) and all(p.exists() for p in files)
    assert any(n.endswith("/rollout.pdf") for n in names) and any("staa_lambda_0.5" in n for n in names)
    assert all(p.read_bytes().startswith(b"%PDF") for p in files if p.suffix == ".pdf")
    im = Image.open(next(p for p in files if p.name == "rollout.png"))
    assert im.size[0] > 3 * im.size[1]  # a strip: four frames side by side
