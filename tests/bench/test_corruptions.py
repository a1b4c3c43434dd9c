"""onebit.bench.corruptions: CIFAR-10-C image corruptions and 1-D signal corruptions."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from onebit.bench import corruptions as C
from onebit.data import InMemoryDataset, load
from onebit.data.transforms import Compose, Normalize, ToFloat

# Corruptions whose output does not depend on the seed (no random draw in their definition).
DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "jpeg_compression", "pixelate",
                 "gaussian_blur", "saturate"}


@pytest.fixture(autouse=True)
def _fresh_cache():
    C.clear_cache()
    yield
    C.clear_cache()


@pytest.fixture(scope="module")
def digits():
    """8x8 digits: normalised float (12, 1, 8, 8) and the bundle."""
    bundle = load("digits")
    return bundle.test.data[:12].clone(), bundle


@pytest.fixture(scope="module")
def rgb32() -> np.ndarray:
    """Eight natural 32x32 RGB images (crops of scikit-image's bundled photographs), uint8 (8, 32, 32, 3)."""
    import cv2
    import skimage.data as skdata

    out = []
    for photo in (skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()):
        h, w = photo.shape[:2]
        for top, left, side in ((0, 0, min(h, w)), (h // 4, w // 4, min(h, w) // 2)):
            crop = photo[top:top + side, left:left + side, :3]
            out.append(cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA))
    return np.stack(out)


@pytest.fixture(scope="module")
def signals() -> np.ndarray:
    """MNIST-1D-shaped signals (16, 1, 40): smooth bumps on a noisy baseline, zero mean, unit std overall."""
    rng = np.random.default_rng(0)
    t = np.linspace(-1, 1, 40)
    centres = rng.uniform(-0.5, 0.5, size=(16, 1, 1))
    x = np.exp(-((t - centres) ** 2) / 0.05) * rng.uniform(0.5, 1.5, size=(16, 1, 1))
    x = x + 0.05 * rng.normal(size=x.shape)
    return ((x - x.mean()) / x.std()).astype(np.float32)


def _mean_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# ---------------------------------------------------------------------------------------------------
# every corruption: shape, dtype, change, severity ordering, determinism
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", C.ALL_IMAGE_CORRUPTIONS)
def test_image_corruption_on_digits_and_rgb(name, digits, rgb32):
    x, bundle = digits
    changes = {}
    global_state = np.random.get_state()[1].copy()
    for severity in (1, 5):
        y = C.corrupt_tensor(x, name, severity, mean=bundle.mean, std=bundle.std, seed=3)
        assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
        raw = y * bundle.std[0] + bundle.mean[0]
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
        gray_change = float((y - x).abs().mean())
        rgb = C.corrupt_images(rgb32, name, severity, seed=3)
        assert rgb.shape == rgb32.shape and rgb.dtype == np.uint8
        changes[severity] = (gray_change, _mean_change(rgb, rgb32))
        # saturation of a gray pixel is 0, and 0 * factor stays 0: saturate 1-3 leave gray images alone
        if not (name == "saturate" and severity == 1):
            assert gray_change > 0, f"{name} at severity {severity} left the digits unchanged"
        assert changes[severity][1] > 0, f"{name} at severity {severity} left the RGB images unchanged"
    if name != "elastic_transform":
        # CIFAR-10-C's elastic severity 1 is a large affine warp and severity 5 a small one plus fine
        # displacement, so its mean pixel change is not monotone; every other corruption's is.
        assert changes[5][0] > changes[1][0], (name, changes)
        assert changes[5][1] > changes[1][1], (name, changes)
    # deterministic per seed; the random ones change with the seed
    again = C.corrupt_images(rgb32, name, 5, seed=3)
    np.testing.assert_array_equal(again, C.corrupt_images(rgb32, name, 5, seed=3))
    other = C.corrupt_images(rgb32, name, 5, seed=4)
    assert np.array_equal(again, other) == (name in DETERMINISTIC)
    # numpy's global generator is neither used nor reseeded
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)


@pytest.mark.parametrize("name", C.SIGNAL_CORRUPTIONS)
def test_signal_corruption(name, signals):
    changes = []
    for severity in (1, 5):
        y = C.corrupt_signals(signals, name, severity, seed=1)
        assert y.shape == signals.shape and y.dtype == np.float32 and np.isfinite(y).all()
        changes.append(_mean_change(y, signals))
        assert changes[-1] > 0
        np.testing.assert_array_equal(y, C.corrupt_signals(signals, name, severity, seed=1))
        assert not np.array_equal(y, C.corrupt_signals(signals, name, severity, seed=2))
    assert changes[1] > changes[0], (name, changes)
    # through the tensor interface, with a normalisation that must be undone and redone
    t = torch.from_numpy(signals)
    out = C.corrupt_tensor((t - 0.5) / 2.0, name, 3, mean=0.5, std=2.0, seed=1)
    np.testing.assert_allclose(out.numpy() * 2.0 + 0.5, C.corrupt_signals(signals, name, 3, seed=1), atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# our implementations against hand-checked properties
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gaussian_blur", "glass_blur", "defocus_blur", "zoom_blur", "pixelate"])
def test_blurs_keep_a_constant_image_constant(name):
    for shape in ((3, 8, 8), (3, 16, 16), (2, 32, 32, 3)):
        img = np.full(shape, 137, dtype=np.uint8)
        for severity in (1, 5):
            np.testing.assert_array_equal(C.corrupt_images(img, name, severity, seed=0), img)


def test_gaussian_blur_smooths_more_with_severity(rgb32):
    def roughness(a):
        return float(np.abs(np.diff(a.astype(np.float64), axis=2)).mean())

    r1, r5 = (roughness(C.corrupt_images(rgb32, "gaussian_blur", s)) for s in (1, 5))
    assert r5 < r1 < roughness(rgb32)
    # a blur moves no mass: the mean brightness stays (up to rounding and the edges)
    assert abs(C.corrupt_images(rgb32, "gaussian_blur", 5).mean() - rgb32.mean()) < 1.0


def test_glass_blur_severity1_only_moves_pixels(rgb32):
    # sigma 0.05 makes a 1-tap Gaussian, so severity 1 is a pure local shuffle of whole RGB pixels
    out = C.corrupt_images(rgb32, "glass_blur", 1, seed=0)
    for before, after in zip(rgb32, out):
        a = np.sort(before.reshape(-1, 3).view([("", np.uint8)] * 3), axis=0)
        b = np.sort(after.reshape(-1, 3).view([("", np.uint8)] * 3), axis=0)
        np.testing.assert_array_equal(a, b)
    assert (out != rgb32).any(axis=-1).mean() > 0.2  # and a good share of them moved
    # the outer ring of max_delta pixels (rows/columns 0 and 1 for delta 1) is never visited
    np.testing.assert_array_equal(out[:, 0], rgb32[:, 0])


def test_fog_adds_an_achromatic_layer_within_bounds():
    strength = C._CIFAR["fog"][4][0]
    x = np.full((4, 32, 32, 3), 0.5)
    rng = np.random.default_rng(0)
    out = C._fog(x, C._CIFAR["fog"][4], rng)
    scale = 0.5 / (0.5 + strength)  # max_val / (max_val + strength)
    assert (out >= 0.5 * scale - 1e-12).all() and (out <= (0.5 + strength) * scale + 1e-12).all()
    np.testing.assert_allclose(out[..., 0], out[..., 1])
    np.testing.assert_allclose(out[..., 0], out[..., 2])
    assert out.std(axis=(1, 2, 3)).min() > 0.01  # a fog pattern, not a constant


def test_fog_brightens_dark_digits_and_lowers_their_contrast(digits):
    x, bundle = digits
    clean = x * bundle.std[0] + bundle.mean[0]
    fogged = C.corrupt_tensor(x, "fog", 5, mean=bundle.mean, std=bundle.std) * bundle.std[0] + bundle.mean[0]
    assert fogged.mean() > clean.mean()
    assert fogged.std(dim=(1, 2, 3)).mean() < clean.std(dim=(1, 2, 3)).mean()


def test_plasma_fractal_is_normalised_and_seeded():
    a = C._plasma_fractal(np.random.default_rng(5), 3, 32, 2.0)
    b = C._plasma_fractal(np.random.default_rng(5), 3, 32, 2.0)
    assert a.shape == (3, 32, 32)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a.min(axis=(1, 2)), 0.0)
    np.testing.assert_allclose(a.max(axis=(1, 2)), 1.0)
    # smooth: neighbours are much closer than random pairs
    assert np.abs(np.diff(a, axis=2)).mean() < 0.5 * np.abs(a - a[:, ::-1, ::-1]).mean()


def test_gray_noise_has_the_stated_level():
    # one draw per gray pixel: the gray result carries sigma = 0.10 (severity 5), not 0.10 / sqrt(3)
    img = np.full((64, 32, 32), 128, dtype=np.uint8)
    out = C.corrupt_images(img, "gaussian_noise", 5, seed=0).astype(np.float64)
    assert abs((out - 128).std() / 255 - 0.10) < 0.005


def test_impulse_noise_sets_pixels_to_black_or_white():
    img = np.full((16, 32, 32, 3), 100, dtype=np.uint8)
    out = C.corrupt_images(img, "impulse_noise", 5, seed=0)
    assert set(np.unique(out).tolist()) <= {0, 100, 255}
    # amount 0.07 at severity 5: every flip turns a 100 into 0 or 255, half each
    assert abs((out == 0).mean() - (out == 255).mean()) < 0.01
    assert abs((out != 100).mean() - 0.07) < 0.01


def test_uint8_images_in_and_out_of_corrupt_tensor(rgb32):
    t = torch.from_numpy(rgb32.transpose(0, 3, 1, 2).copy())
    out = C.corrupt_tensor(t, "contrast", 5)
    assert out.dtype == torch.uint8 and out.shape == t.shape
    np.testing.assert_array_equal(out.numpy().transpose(0, 2, 3, 1), C.corrupt_images(rgb32, "contrast", 5))


def test_signal_definitions(signals):
    k = round(0.25 * 40)
    shifted = C.corrupt_signals(signals, "shift", 5, seed=0)
    rolled = C.corrupt_signals(signals, "circular_shift", 5, seed=0)
    for x, s, r in zip(signals, shifted, rolled):
        assert np.array_equal(r, np.roll(x, k, axis=-1)) or np.array_equal(r, np.roll(x, -k, axis=-1))
        to_right = (s[:, :k] == 0).all() and np.array_equal(s[:, k:], x[:, :-k])
        to_left = (s[:, -k:] == 0).all() and np.array_equal(s[:, :-k], x[:, k:])
        assert to_right or to_left
    ratio = C.corrupt_signals(signals, "scale", 5, seed=0) / signals
    per_sample = ratio.reshape(len(signals), -1)
    np.testing.assert_allclose(per_sample, per_sample[:, :1].repeat(40, axis=1), rtol=1e-5)
    assert all(np.isclose(r, 3.0) or np.isclose(r, 1 / 3.0) for r in per_sample[:, 0])
    dropped = C.corrupt_signals(signals, "dropout", 5, seed=0)
    assert abs((dropped == 0).mean() - 0.4) < 0.06
    # a stretched straight line stays a straight line through the centre
    line = np.tile(np.linspace(-1, 1, 40, dtype=np.float32), (8, 1, 1))
    stretched = C.corrupt_signals(line, "time_stretch", 2, seed=0)
    slopes = np.diff(stretched[:, 0, 5:-5], axis=-1).mean(axis=-1) / np.diff(line[0, 0])[0]
    assert all(np.isclose(s, 1.2, rtol=1e-4) or np.isclose(s, 1 / 1.2, rtol=1e-4) for s in slopes)


# ---------------------------------------------------------------------------------------------------
# datasets and the cache
# ---------------------------------------------------------------------------------------------------


def test_corrupt_dataset_is_cached_in_memory_and_on_disk(digits, tmp_path, monkeypatch):
    _, bundle = digits
    calls = []
    real = C.corrupt_tensor
    monkeypatch.setattr(C, "corrupt_tensor", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    a = C.corrupt_dataset(bundle, "snow", 2, seed=7, cache_dir=tmp_path)
    b = C.corrupt_dataset(bundle, "snow", 2, seed=7, cache_dir=tmp_path)
    assert calls == ["snow"] and C.cache_info()["hits"] == 1
    torch.testing.assert_close(a.data, b.data, rtol=0, atol=0)
    assert torch.equal(a.labels, bundle.test.labels) and len(a) == len(bundle.test)
    assert not torch.equal(a.data, bundle.test.data)
    assert a.data is b.data  # handed out from the cache without a copy ...
    kept = b.data.clone()
    a.data.zero_()  # ... but an in-place edit is noticed: the set is rebuilt (here: read back from disk)
    assert torch.equal(C.corrupt_dataset(bundle, "snow", 2, seed=7, cache_dir=tmp_path).data, kept)
    b = C.corrupt_dataset(bundle, "snow", 2, seed=7)
    (file,) = tmp_path.glob("corrupt-snow-2-*.npz")
    C.clear_cache()
    c = C.corrupt_dataset(bundle, "snow", 2, seed=7, cache_dir=tmp_path)
    assert calls == ["snow"] and torch.equal(c.data, b.data)  # read back from disk
    file.write_bytes(b"not an npz")  # a damaged file is recomputed and rewritten
    C.clear_cache()
    d = C.corrupt_dataset(bundle, "snow", 2, seed=7, cache_dir=tmp_path)
    assert calls == ["snow", "snow"] and torch.equal(d.data, b.data)
    assert list(tmp_path.iterdir()) == [file]  # no temp file left behind
    # the clean data's fingerprint is remembered until the tensor changes in place
    x = bundle.test.data.clone()
    first = C._fingerprint(x)
    assert C._fingerprint(x) == first == C._fingerprint(x.clone())
    x[0, 0, 0, 0] += 1
    assert C._fingerprint(x) != first
    # a different seed or severity is a different set
    assert not torch.equal(C.corrupt_dataset(bundle, "snow", 2, seed=8).data, b.data)
    assert not torch.equal(C.corrupt_dataset(bundle, "snow", 3, seed=7).data, b.data)


def test_cache_limit_evicts():
    C.set_cache_limit(0)
    x = torch.zeros(4, 1, 8, 8)
    ds = InMemoryDataset(x, torch.zeros(4))
    C.corrupt_dataset(ds, "brightness", 1, mean=0.0, std=1.0)
    assert C.cache_info()["entries"] == 0
    C.set_cache_limit(2 << 30)
    C.corrupt_dataset(ds, "brightness", 1, mean=0.0, std=1.0)
    assert C.cache_info()["entries"] == 1


def test_corrupt_dataset_on_raw_uint8_with_transform(rgb32):
    images = torch.from_numpy(rgb32.transpose(0, 3, 1, 2).copy())
    tf = Compose([ToFloat(), Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])
    ds = InMemoryDataset(images, torch.arange(8), tf)
    out = C.corrupt_dataset(ds, "jpeg_compression", 5)
    assert out.data.dtype == torch.uint8 and out.transform is tf
    np.testing.assert_array_equal(out.data.numpy().transpose(0, 2, 3, 1),
                                  C.corrupt_images(rgb32, "jpeg_compression", 5))
    x, y = out[0]
    assert x.dtype == torch.float32 and y == 0


def test_corrupt_dataset_on_mnist1d(tmp_path):
    bundle = load("mnist1d", num_samples=200, root=tmp_path)
    out = C.corrupt_dataset(bundle, "time_stretch", 3)
    assert out.data.shape == bundle.test.data.shape == (40, 1, 40)
    assert C.corruptions_for(bundle.input_shape) == C.SIGNAL_CORRUPTIONS


def test_corruptions_for_and_available():
    assert C.corruptions_for((1, 8, 8)) == C.ALL_IMAGE_CORRUPTIONS
    assert C.corruptions_for((3, 32, 32), extra=False) == C.IMAGE_CORRUPTIONS
    assert len(C.available("image")) == 15 and len(C.available("image_extra")) == 4
    assert C.available("image_all") == C.IMAGE_CORRUPTIONS + C.EXTRA_IMAGE_CORRUPTIONS
    assert set(C.SIGNAL_PARAMETERS) == set(C.available("signal"))
    assert set(C._CIFAR) == set(C.ALL_IMAGE_CORRUPTIONS)


# ---------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------


def test_errors(digits, signals):
    x, bundle = digits
    with pytest.raises(ValueError, match=r"unknown image corruption 'blur'.*valid image corruptions: gaussian_noise"):
        C.corrupt_tensor(x, "blur", 1, mean=bundle.mean, std=bundle.std)
    with pytest.raises(ValueError, match=r"'fog' is an image corruption.*valid signal corruptions: gaussian_noise"):
        C.corrupt_signals(signals, "fog", 1)
    with pytest.raises(ValueError, match=r"'shift' is a signal corruption"):
        C.corrupt_dataset(bundle, "shift", 1)
    for bad in (0, 6, True, 2.0, "3"):
        with pytest.raises(ValueError, match=r"severity must be an int in 1\.\.5 \(one of \[1, 2, 3, 4, 5\]\)"):
            C.corrupt_tensor(x, "fog", bad, mean=bundle.mean, std=bundle.std)
    with pytest.raises(ValueError, match=r"images \(N, C, H, W\) with C = 1 or 3 or of signals \(N, C, L\)"):
        C.corrupt_tensor(torch.zeros(2, 2, 8, 8), "fog", 1)
    with pytest.raises(ValueError, match=r"images \(N, C, H, W\)"):
        C.corrupt_tensor(torch.zeros(8, 8), "fog", 1)
    with pytest.raises(ValueError, match=r"shape \(N, H, W, 3\)"):
        C.corrupt_images(np.zeros((2, 8, 8, 2), dtype=np.uint8), "fog", 1)
    with pytest.raises(ValueError, match=r"uint8"):
        C.corrupt_images(np.zeros((2, 8, 8, 3)), "fog", 1)
    with pytest.raises(ValueError, match=r"span .* not \[0, 1\]: pass the mean and std"):
        C.corrupt_tensor(x, "fog", 1)  # normalised digits with mean 0, std 1 go negative
    with pytest.raises(ValueError, match=r"needs mean= and std="):
        C.corrupt_dataset(bundle.test, "fog", 1)
    with pytest.raises(ValueError, match=r"std must be one finite positive number per channel \(1\)"):
        C.corrupt_dataset(bundle.test, "fog", 1, mean=0.0, std=0.0)
    with pytest.raises(ValueError, match=r"DataBundle or an InMemoryDataset"):
        C.corrupt_dataset([1, 2, 3], "fog", 1)
    with pytest.raises(ValueError, match=r"seed must be an int >= 0"):
        C.corrupt_signals(signals, "shift", 1, seed=-1)
    with pytest.raises(ValueError, match=r"shape \(N, C, L\)"):
        C.corrupt_signals(signals[0], "shift", 1)
    with pytest.raises(ValueError, match=r"valid kinds: image, image_extra, image_all, signal"):
        C.available("audio")
    with pytest.raises(ValueError, match=r"no corruption set for input shape \(2, 8, 8\)"):
        C.corruptions_for((2, 8, 8))


def test_missing_pkg_resources_says_how_to_fix(monkeypatch, rgb32):
    for mod in [m for m in sys.modules if m == "imagecorruptions" or m.startswith("imagecorruptions.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # makes `import pkg_resources` fail
    with pytest.raises(ImportError, match=r"pip install 'setuptools<81'"):
        C.corrupt_images(rgb32, "defocus_blur", 1)


def test_large_sets_are_corrupted_in_seeded_chunks(rgb32, monkeypatch):
    monkeypatch.setattr(C, "_CHUNK", 3)
    whole = C.corrupt_images(rgb32, "elastic_transform", 3, seed=1)
    np.testing.assert_array_equal(whole, C.corrupt_images(rgb32, "elastic_transform", 3, seed=1))
    # a chunk's result depends only on the seed and the chunk's position, not on what follows it
    np.testing.assert_array_equal(whole[:3], C.corrupt_images(rgb32[:3], "elastic_transform", 3, seed=1))
    np.testing.assert_array_equal(whole[:6], C.corrupt_images(rgb32[:6], "elastic_transform", 3, seed=1))


def test_work_size_none_corrupts_small_images_at_their_own_size(digits):
    x, bundle = digits
    kw = {"mean": bundle.mean, "std": bundle.std}
    working = C.corrupt_tensor(x, "gaussian_blur", 5, **kw)
    native = C.corrupt_tensor(x, "gaussian_blur", 5, work_size=None, **kw)
    # sigma 1 px of the 8x8 image is 4x the blur of sigma 1 px of the 32x32 working copy
    assert (native - x).abs().mean() > 2 * (working - x).abs().mean()
    a = C.corrupt_dataset(bundle, "gaussian_blur", 5, work_size=None)
    b = C.corrupt_dataset(bundle, "gaussian_blur", 5)
    assert not torch.equal(a.data, b.data)  # the working size is part of the cache key
    with pytest.raises(ValueError, match=r"work_size must be None or an int in 8\.\.4096"):
        C.corrupt_tensor(x, "fog", 1, work_size=4, **kw)
