import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.data import build_task
from harness.cache import cache_dir


def test_seeded_cached_and_split_fixed(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))  # an empty cache of its own
    a = build_task("synthetic_organ", n_cases=5, shape=(16, 32, 32), seed=3)
    assert a.in_channels == 1 and not list(cache_dir().glob("synthetic_organ-*")), "nothing generated before use"
    a.train
    (folder,) = cache_dir().glob("synthetic_organ-*")
    assert len(list(folder.glob("*.npy"))) == 10, "one image and one label file per case"
    b = build_task("synthetic_organ", n_cases=5, shape=(16, 32, 32), seed=3)  # from the cache
    assert [c.id for c in a.val] == [c.id for c in b.val] and len(a.train) == 4 and len(a.val) == 1
    for x, y in zip(a.train + a.val, b.train + b.val):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.label, y.label)
    c = build_task("synthetic_organ", n_cases=5, shape=(16, 32, 32), seed=4)
    assert not np.array_equal(a.train[0].image, c.train[0].image)


@pytest.mark.parametrize("name,params", [("synthetic_organ", {}), ("synthetic_brats", {"labels": "classes"}),
                                         ("synthetic_depth", {}), ("synthetic_abdomen", {})])
def test_a_held_out_validation_set_is_drawn_apart_from_the_training_cases(name, params):
    # val_cases: every generated case trains, and as many new cases of the same distribution validate.
    shape = (16, 32, 32)
    held = build_task(name, n_cases=3, val_cases=4, shape=shape, **params)
    split = build_task(name, n_cases=3, shape=shape, **params)
    assert len(held.train) == 3 and len(held.val) == 4 and {c.id[:4] for c in held.val} == {"val_"}
    assert len(split.train) + len(split.val) == 3  # the ratio split of the same cases, as before
    train_ids = sorted(c.id for c in split.train + split.val)
    assert [c.id for c in held.train] == train_ids  # same training draws, same cache
    assert all(np.array_equal(a.image, b.image) for a, b in zip(held.train, sorted(split.train + split.val,
                                                                                   key=lambda c: c.id)))
    assert not any(np.array_equal(v.image, t.image) for v in held.val for t in held.train)
    assert held.val[0].image.shape == held.train[0].image.shape and held.val[0].label.dtype == np.uint8
    with pytest.raises(ValueError, match="data.val_cases: must be a whole number >= 0"):
        build_task(name, n_cases=3, val_cases=-2, shape=shape, **params)


def test_brats_regions_are_nested_and_channels_match():
    t = build_task("synthetic_brats", n_cases=4, shape=(32, 32, 32))
    assert t.in_channels == 4 and t.regions == ("WT", "TC", "ET")
    for case in t.train + t.val:
        wt, tc, et = case.label.astype(bool)
        assert case.image.shape == (4, 32, 32, 32)
        assert et.any() and tc.any() and wt.sum() > tc.sum()
        assert not (et & ~tc).any() and not (tc & ~wt).any()


def test_brats_tumour_scale_and_contrast():
    base = build_task("synthetic_brats", n_cases=4, shape=(32, 32, 32))
    big = build_task("synthetic_brats", n_cases=4, shape=(32, 32, 32), tumour_scale=1.8, contrast=1.5)
    frac = [np.mean([c.label[1].mean() for c in t.train]) for t in (base, big)]
    assert frac[1] > 3 * frac[0]  # TC grows with the radii cubed
    with pytest.raises(ValueError, match="tumour_scale and contrast must be > 0"):
        build_task("synthetic_brats", tumour_scale=0)


def test_abdomen_organs_are_exclusive_present_and_of_graded_difficulty():
    t = build_task("synthetic_abdomen", n_cases=5, shape=(48, 48, 48))
    assert t.in_channels == 1 and t.exclusive and len(t.regions) == 8 and t.regions[5] == "liver"
    labels = np.stack([c.label for c in t.train + t.val]).astype(bool)
    assert labels.sum(1).max() == 1  # mutually exclusive
    assert labels.reshape(5, 8, -1).sum(-1).min() > 50  # every organ shows in every case
    size = labels.mean((0, 2, 3, 4))
    assert size[5] == size.max() and size[5] > 20 * size[[1, 3, 4, 7]].max()  # liver vs the small ones
    images = np.stack([c.image[0] for c in t.train + t.val])
    body = labels.sum(1) == 0
    contrast = {r: images[labels[:, k]].mean() - np.median(images[body & (images > 0.3)]) for k, r in
                enumerate(t.regions)}
    assert contrast["pancreas"] < 0.5 * 0.8 and contrast["duodenum"] < 0.5 * 0.8  # below half the noise
    assert contrast["kidney"] > 2 * contrast["pancreas"] and contrast["gallbladder"] < -0.3
    visceral = build_task("synthetic_abdomen", n_cases=5, shape=(40, 40, 40), layout="visceral")
    assert visceral.regions == ("liver", "spleen", "bladder", "kidney_left", "kidney_right", "psoas_left", "psoas_right")
    assert np.stack([c.label for c in visceral.train]).sum(1).max() == 1
    with pytest.raises(ValueError, match="layout: unknown 'viscral'; allowed: tcia, visceral"):
        build_task("synthetic_abdomen", layout="viscral")
    # One organ labelled (ConResNet Table II's pancreas): the same volumes, the others unlabelled.
    pancreas = build_task("synthetic_abdomen", n_cases=5, shape=(48, 48, 48), regions=["pancreas"])
    assert pancreas.regions == ("pancreas",) and pancreas.train[0].label.shape[0] == 1
    for one, every in zip(pancreas.train, t.train):
        assert np.array_equal(one.image, every.image) and np.array_equal(one.label[0], every.label[1])
    with pytest.raises(ValueError, match="regions: \\['pancreaz'\\] must be distinct organs of layout 'tcia'"):
        build_task("synthetic_abdomen", regions=["pancreaz"])


def _dice(pred, ref):
    return 2 * (pred & ref).sum() / (pred.sum() + ref.sum())


def test_organ_task_needs_spatial_context():
    # A single voxel is a poor cue (contrast below the noise); a 3x3x3 mean already helps a lot.
    t = build_task("synthetic_organ", n_cases=6, shape=(16, 64, 64))
    local, context = [], []
    for case in t.train:
        img, ref = torch.from_numpy(case.image)[None], case.label[0].astype(bool)
        smooth = F.avg_pool3d(img, 5, stride=1, padding=2)[0, 0].numpy()
        raw = img[0, 0].numpy()
        local.append(max(_dice(raw > q, ref) for q in np.quantile(raw, np.linspace(0.5, 0.95, 10))))
        context.append(max(_dice(smooth > q, ref) for q in np.quantile(smooth, np.linspace(0.5, 0.95, 10))))
    assert np.mean(context) > np.mean(local) + 0.15, (np.mean(local), np.mean(context))


def test_depth_task_needs_neighbouring_slices():
    # In one slice a disc looks like a sphere's cross-section; the slices above and below tell them apart.
    t = build_task("synthetic_depth", n_cases=6, seed=1)
    in_plane, with_depth = [], []
    for case in t.train:
        img, ref = torch.from_numpy(np.array(case.image))[None], case.label[0].astype(bool)
        smooth = F.avg_pool3d(img, (1, 3, 3), stride=1, padding=(0, 1, 1))
        depth_min = -F.max_pool3d(-smooth, (3, 1, 1), stride=1, padding=(1, 0, 0))  # min over slices t-1..t+1
        qs = np.linspace(0.2, 0.9, 15)
        in_plane.append(max(_dice(smooth[0, 0].numpy() > q, ref) for q in qs))
        with_depth.append(max(_dice(depth_min[0, 0].numpy() > q, ref) for q in qs))
    assert np.mean(with_depth) > np.mean(in_plane) + 0.1, (np.mean(in_plane), np.mean(with_depth))


def test_depth_task_takes_the_shape_of_a_real_task():
    # Prostate-like: 2 channels, 2 disjoint regions whose channel contrast differs.
    t = build_task("synthetic_depth", n_cases=4, seed=2, shape=(8, 32, 32), in_channels=2, regions=["pz", "tz"],
                   objects=2)
    assert (t.in_channels, t.regions) == (2, ("pz", "tz"))
    case = t.train[0]
    assert case.image.shape == (2, 8, 32, 32) and case.label.shape == (2, 8, 32, 32)
    pz, tz = case.label.astype(bool)
    assert pz.any() and tz.any() and not (pz & tz).any()
    img = np.asarray(case.image)
    assert img[0][pz].mean() < img[0][tz].mean() and img[1][pz].mean() > img[1][tz].mean()
    with pytest.raises(ValueError, match="distinct"):
        build_task("synthetic_depth", regions=["a", "a"])


def test_a_case_thinner_than_the_patch_is_zero_padded_to_it():
    # A 1-voxel-thick case trains on the patch it is padded to (docs/data.md), never refused.
    from monai.inferers import sliding_window_inference

    from harness.config import TrainCfg
    from harness.train import sample_transforms

    cfg = TrainCfg(patch=[16, 32, 32], augment=[])
    image = np.ones((1, 1, 40, 40), np.float32)
    label = np.ones((1, 1, 40, 40), np.uint8)
    out = sample_transforms(cfg, seed=0)({"image": image, "label": label})
    assert tuple(out["image"].shape) == (1, 16, 32, 32) and float(out["image"].sum()) == 32 * 32  # one slice of ones
    pred = sliding_window_inference(torch.from_numpy(image)[None], cfg.patch, 1, lambda x: x)
    assert tuple(pred.shape) == (1, 1, 1, 40, 40)  # evaluated on the case's own size
