import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from xaibench import datasets
from xaibench.datasets.synthetic import SyntheticClips, class_pattern
from xaibench.errors import UserError


def test_deterministic_and_split_disjoint():
    a = datasets.create("synthetic_video", split="val", n_samples=6)
    b = datasets.create("synthetic_video", split="val", n_samples=6)
    for i in range(6):
        assert torch.equal(a[i].x, b[i].x) and torch.equal(a[i].mask, b[i].mask)
    t = datasets.create("synthetic_video", split="test", n_samples=6)
    assert not torch.equal(a[0].x, t[0].x)
    other_seed = datasets.create("synthetic_video", split="val", n_samples=6, seed=1)
    assert not torch.equal(a[0].x, other_seed[0].x)


@pytest.mark.parametrize("frames", [4, 8, 16])
def test_ground_truth_is_where_the_label_lives(frames):
    ds = datasets.create("synthetic_video", split="test", n_samples=12, frames=frames)
    for i in range(len(ds)):
        s = ds[i]
        assert s.x.shape == (frames, 3, 64, 64) and s.x.min() >= 0 and s.x.max() <= 1
        # frames is exactly the set of frames where the mask is non-empty, one contiguous run
        assert torch.equal(s.frames, s.mask.flatten(1).any(1))
        idx = torch.nonzero(s.frames).flatten()
        assert len(idx) >= 1 and int(idx[-1] - idx[0]) + 1 == len(idx)
        lo, hi = ds.evidence_frames
        assert lo <= len(idx) <= hi
        # the mask is one evidence_size square per evidence frame
        assert int(s.mask[idx[0]].sum()) == ds.evidence_size**2
        renders = [ds.render(i, c)[0] for c in range(ds.num_classes)]
        m = s.mask.numpy()[:, None].repeat(3, 1)
        for r in renders[1:]:  # identical outside the mask, for every label
            np.testing.assert_array_equal(r[~m], renders[0][~m])
        # ...and different inside it: the pattern is the class
        assert all(np.abs(renders[c][m] - renders[0][m]).max() > 0.1 for c in range(1, ds.num_classes))
        # the evidence pixels follow the class pattern (bright where the pattern is 1)
        t0 = int(idx[0])
        ys, xs = np.nonzero(s.mask[t0].numpy())
        patch = s.x[t0, :, ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].numpy().max(0)
        pat = class_pattern(s.label, ds.evidence_size).astype(bool)
        assert patch[pat].min() > patch[~pat].max()


def _features(x: np.ndarray) -> np.ndarray:
    """Translation-invariant edge-orientation energies of a clip (T, C, H, W)."""
    g = x.mean(1)
    fy = np.abs(np.diff(g, axis=1)).sum()
    fx = np.abs(np.diff(g, axis=2)).sum()
    d1 = np.abs(g[:, 1:, 1:] - g[:, :-1, :-1]).sum()
    d2 = np.abs(g[:, 1:, :-1] - g[:, :-1, 1:]).sum()
    v = np.array([fy, fx, d1, d2])
    return np.concatenate([v / (v.sum() + 1e-9), [np.log1p(v.sum())]])


def _accuracy(make):
    tr = SyntheticClips(split="train", frames=8, num_classes=4)
    va = SyntheticClips(split="val", frames=8, num_classes=4)
    Xtr = np.stack([_features(make(tr, i)) for i in range(400)])
    ytr = np.arange(400) % 4
    Xva = np.stack([_features(make(va, i)) for i in range(200)])
    yva = np.arange(200) % 4
    clf = LogisticRegression(max_iter=2000).fit(Xtr, ytr)
    return (clf.predict(Xva) == yva).mean()


def test_evidence_alone_carries_the_label_and_the_rest_none():
    def evidence_only(ds, i):
        x, mask, _ = ds.render(i, i % 4)
        return x * mask[:, None]

    def blanked(ds, i):
        return ds.render(i, i % 4, blank_evidence=True)[0]

    acc_evidence = _accuracy(evidence_only)
    acc_blank = _accuracy(blanked)
    # chance is 0.25; with 200 validation clips, 3 binomial standard deviations are 0.09
    assert acc_evidence > 0.9
    assert abs(acc_blank - 0.25) < 0.09


@pytest.mark.parametrize(
    "kw,needle",
    [({"frames": 2}, "[4, 32]"), ({"frames": 40}, "[1, 32]"), ({"size": 16}, "[32, 256]"),
     ({"split": "dev"}, "valid splits"), ({"num_classes": 9}, "[2, 6]")],
)
def test_bad_parameters_say_the_allowed_range(kw, needle):
    with pytest.raises(UserError) as e:
        datasets.create("synthetic_video", **kw)
    assert needle in str(e.value)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UserError) as e:
        datasets.create("synthetic_vidoe")
    assert "synthetic_video" in str(e.value) and "synthetic_image" in str(e.value)


def test_image_variant():
    ds = datasets.create("synthetic_image", n_samples=3)
    s = ds[0]
    assert s.x.shape == (1, 3, 64, 64) and s.mask.shape == (1, 64, 64) and bool(s.frames.all())
