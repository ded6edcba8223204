import hashlib

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion
from sklearn.linear_model import LogisticRegression

from xaibench import datasets
from xaibench.datasets.synthetic import LEVELS, SyntheticVideoConfig, class_pattern
from xaibench.errors import UserError

LEVEL_NAMES = list(LEVELS)


def test_deterministic_and_split_disjoint():
    a = datasets.create("synthetic_video", split="val", n_samples=6)
    b = datasets.create("synthetic_video", split="val", n_samples=6)
    for i in range(6):
        assert torch.equal(a[i].x, b[i].x) and torch.equal(a[i].mask, b[i].mask)
    t = datasets.create("synthetic_video", split="test", n_samples=6)
    assert not torch.equal(a[0].x, t[0].x)
    other_seed = datasets.create("synthetic_video", split="val", n_samples=6, seed=1)
    assert not torch.equal(a[0].x, other_seed[0].x)


def _digest(ds, idx):
    m = hashlib.sha256()
    for i in idx:
        for lab in range(ds.num_classes):
            x, mask, fr = ds.render(i, lab)
            m.update(x.tobytes())
            m.update(mask.tobytes())
            m.update(fr.tobytes())
        m.update(ds.render(i, 0, blank_evidence=True)[0].tobytes())
    return m.hexdigest()


@pytest.mark.parametrize("name,kw,idx,digest", [
    ("synthetic_video", dict(split="test", frames=8), range(6),
     "8007ee39207d68cf39026cfa1ebbeb31bc481bf2226a05c6638b5895323fe0ce"),
    ("synthetic_video", dict(split="train", frames=8), range(3),
     "c54538bf0de6ae1d72ffd94724f70b9377b22c34bcf49c967053f29995250dab"),
    ("synthetic_image", dict(split="test"), range(6),
     "cb7c22fe75f55421005539d5c339f00b91a445f8013adecd04ba3a483867779f"),
    ("synthetic_video", dict(split="val", frames=16, num_classes=6, size=96, seed=3), range(3),
     "c6f03dc7cb13d41eb05ebd5917e29619a27292735aac642210b0f6e117572456"),
])
def test_easy_level_renders_what_the_shipped_models_were_trained_on(name, kw, idx, digest):
    """The digests were taken from the generator the shipped models were trained with (before the levels)."""
    ds = datasets.create(name, **kw)
    assert ds.difficulty == "easy" and _digest(ds, idx) == digest


@pytest.mark.parametrize("difficulty", LEVEL_NAMES)
@pytest.mark.parametrize("frames", [1, 4, 8, 16])
def test_ground_truth_is_where_the_label_lives(frames, difficulty):
    name = "synthetic_image" if frames == 1 else "synthetic_video"
    kw = {} if frames == 1 else {"frames": frames}
    ds = datasets.create(name, split="test", n_samples=8, difficulty=difficulty, **kw)
    s_ = ds.evidence_size
    for i in range(len(ds)):
        s = ds[i]
        assert s.x.shape == (frames, 3, 64, 64) and s.x.min() >= 0 and s.x.max() <= 1
        # frames is exactly the set of frames where the mask is non-empty, one contiguous run
        assert torch.equal(s.frames, s.mask.flatten(1).any(1))
        idx = torch.nonzero(s.frames).flatten()
        assert len(idx) >= 1 and int(idx[-1] - idx[0]) + 1 == len(idx)
        lo, hi = ds.evidence_frames
        assert lo <= len(idx) <= hi
        # the mask is one evidence_size square per evidence frame (it moves with the evidence)
        for t in idx:
            ys, xs = np.nonzero(s.mask[t].numpy())
            assert len(ys) == s_ ** 2 and ys.max() - ys.min() + 1 == s_ and xs.max() - xs.min() + 1 == s_
        renders = [ds.render(i, c)[0] for c in range(ds.num_classes)]
        m = s.mask.numpy()[:, None].repeat(3, 1)
        for r in renders[1:]:  # identical outside the mask, for every label
            np.testing.assert_array_equal(r[~m], renders[0][~m])
        # ...and different inside it: the pattern is the class
        assert all(np.abs(renders[c][m] - renders[0][m]).max() > 0.05 for c in range(1, ds.num_classes))
        # the evidence pixels follow the class pattern (brighter where the pattern is 1), outline aside
        t0 = int(idx[0])
        ys, xs = np.nonzero(s.mask[t0].numpy())
        patch = s.x[t0, :, ys.min(): ys.max() + 1, xs.min(): xs.max() + 1].numpy().max(0)
        pat = class_pattern(s.label, s_).astype(bool)
        inner = np.zeros_like(pat)
        inner[1:-1, 1:-1] = True  # the outline (decoy levels) is the same for every class
        if ds.evidence_noise == 0:
            assert patch[pat & inner].min() > patch[~pat & inner].max()
        else:  # fresh noise in every frame: the class shows in the mean over pixels
            assert patch[pat & inner].mean() > patch[~pat & inner].mean() + 0.1


def test_levels_move_the_evidence_add_decoys_and_cover_half_the_frame_for_segmentation():
    medium = datasets.create("synthetic_video", difficulty="medium", n_samples=16)
    moved = 0
    for i in range(len(medium)):
        s = medium[i]
        idx = torch.nonzero(s.frames).flatten().tolist()
        corners = [tuple(np.argwhere(s.mask[t].numpy()).min(0)) for t in idx]
        moved += all(a != b for a, b in zip(corners, corners[1:]))  # a new position in every evidence frame
        # decoys: class patterns outside the mask in every frame; the outline marks the evidence only
        t = idx[0]
        x = s.x[t].numpy()
        outline = (np.abs(x - 0.95) < 1e-6).all(0)
        assert outline.any() and not (outline & ~s.mask[t].numpy()).any()
    assert moved == len(medium)
    seg = datasets.create("synthetic_image", difficulty="segmentation", n_samples=8)
    fg = np.mean([seg[i].mask.float().mean().item() for i in range(8)])
    assert 0.4 < fg < 0.6
    vseg = datasets.create("synthetic_video", difficulty="segmentation", n_samples=4)
    assert all(bool(vseg[i].frames.all()) for i in range(4))


def _features(x: np.ndarray) -> np.ndarray:
    """Translation-invariant edge-orientation energies of a clip (T, C, H, W)."""
    g = x.mean(1)
    fy = np.abs(np.diff(g, axis=1)).sum()
    fx = np.abs(np.diff(g, axis=2)).sum()
    d1 = np.abs(g[:, 1:, 1:] - g[:, :-1, :-1]).sum()
    d2 = np.abs(g[:, 1:, :-1] - g[:, :-1, 1:]).sum()
    v = np.array([fy, fx, d1, d2])
    return np.concatenate([v / (v.sum() + 1e-9), [np.log1p(v.sum())]])


def _accuracy(make, difficulty):
    tr = datasets.create("synthetic_video", split="train", frames=8, num_classes=4, difficulty=difficulty)
    va = datasets.create("synthetic_video", split="val", frames=8, num_classes=4, difficulty=difficulty)
    Xtr = np.stack([_features(make(tr, i)) for i in range(400)])
    ytr = np.arange(400) % 4
    Xva = np.stack([_features(make(va, i)) for i in range(200)])
    yva = np.arange(200) % 4
    clf = LogisticRegression(max_iter=2000).fit(Xtr, ytr)
    return (clf.predict(Xva) == yva).mean()


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
def test_evidence_alone_carries_the_label_and_the_rest_none(difficulty):
    def evidence_only(ds, i):  # the evidence square; its outline (decoy levels) is the same for every class
        x, mask, _ = ds.render(i, i % 4)
        inner = binary_erosion(mask, structure=np.ones((1, 3, 3), bool)) if ds.decoys else mask
        return x * inner[:, None]

    def blanked(ds, i):
        return ds.render(i, i % 4, blank_evidence=True)[0]

    acc_evidence = _accuracy(evidence_only, difficulty)
    acc_blank = _accuracy(blanked, difficulty)
    # chance is 0.25; with 200 validation clips, 3 binomial standard deviations are 0.09
    assert acc_evidence > 0.75
    assert abs(acc_blank - 0.25) < 0.09


def test_knobs_come_from_the_level_unless_given():
    ds = datasets.create("synthetic_video", difficulty="medium", decoys=0, evidence_size=16)
    k = ds.knobs()
    assert k["decoys"] == 0 and k["evidence_size"] == 16 and k["contrast"] == LEVELS["medium"]["contrast"]
    assert ds.describe()["difficulty"] == "medium"
    img = datasets.create("synthetic_image", difficulty="hard")
    assert img.knobs()["motion"] == 0 and img.knobs()["evidence_frames"] == [1, 1]
    cfg = SyntheticVideoConfig(difficulty="segmentation", size=96)
    assert cfg.level()["evidence_size"] == 64 and cfg.level()["evidence_frames"] == (8, 8)


def test_the_fingerprint_tells_levels_apart_without_rendering(monkeypatch):
    a = datasets.create("synthetic_image", n_samples=5)
    b = datasets.create("synthetic_image", n_samples=5, difficulty="medium")
    monkeypatch.setattr(type(a), "render", lambda *a, **k: pytest.fail("fingerprint rendered a sample"))
    fa, fb = a.fingerprint(), b.fingerprint()
    assert fa["sample_ids_sha256"] == fb["sample_ids_sha256"]  # the same ids ...
    assert fa["generator_sha256"] != fb["generator_sha256"]  # ... but other pixels
    assert a.sample_id(3) == "test-00003"


@pytest.mark.parametrize(
    "kw,needle",
    [({"frames": 2}, "[4, 32]"), ({"frames": 40}, "[4, 32]"), ({"size": 16}, "[32, 256]"),
     ({"split": "dev"}, "valid values are train, val, test"), ({"num_classes": 9}, "[2, 6]"),
     ({"difficulty": "extreme"}, "easy, medium, hard, segmentation"),
     ({"evidence_frames": [5, 3]}, "min <= max"), ({"evidence_frames": [2, 9]}, "<= frames=8"),
     ({"evidence_size": 80}, "at most the frame size"), ({"grid": 5}, "multiple of dataset.grid=5"),
     ({"contrast": 0}, "out of range"), ({"decoy": 2}, "Did you mean")],
)
def test_bad_parameters_say_what_is_allowed(kw, needle):
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
    with pytest.raises(UserError, match="frames"):
        datasets.create("synthetic_image", frames=8)
