"""Image branch: an ImageNet-layout folder -> cached VAE latents -> training data, and latent samples decoded to
images, with a tiny randomly initialised AutoencoderKL. The tests that build the VAE are slow only because
importing diffusers takes 10-30 s on a small CPU machine."""

import numpy as np
import pytest
import torch
from PIL import Image

from drifting_image.data import load_dataset
from drifting_image.encode_latents import center_crop_arr, list_image_folder
from drifting_image.encode_latents import main as encode_main
from drifting_image.generator import build_generator
from drifting_image.sample import main as sample_main
from drifting_image.sample import sample_images
from drifting_image.train import TrainConfig, Trainer
from drifting_image.vae import load_vae

# Two classes of images in assorted sizes and modes, (width, height, mode) per file.
IMAGES = {"cat": [(40, 24, "RGB"), (24, 40, "L"), (16, 16, "RGBA")], "dog": [(33, 57, "RGB"), (64, 64, "RGB")]}


def write_image_folder(root):
    rng = np.random.default_rng(0)
    for name, specs in IMAGES.items():
        (root / name).mkdir(parents=True)
        for i, (w, h, mode) in enumerate(specs):
            channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
            pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
            Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels).save(root / name / f"{i}.png")
        (root / name / "notes.txt").write_text("not an image")
    return root


def test_center_crop_halves_with_a_box_filter_then_keeps_the_middle():
    ramp = np.tile((np.arange(64) * 4).astype(np.uint8)[None, :, None], (32, 1, 3))  # 64 wide, 32 high
    crop = center_crop_arr(Image.fromarray(ramp), 16)
    # Halved once to 32x16 (each column the mean of two: 8j + 2), then the middle 16 columns (8..23).
    assert crop.shape == (16, 16, 3) and crop.dtype == np.uint8
    assert crop[0, :, 0].tolist() == [8 * j + 2 for j in range(8, 24)]
    assert center_crop_arr(Image.new("RGB", (33, 57)), 16).shape == (16, 16, 3)


def test_image_folder_lists_sorted_classes_and_skips_other_files(tmp_path):
    files, labels, class_names = list_image_folder(write_image_folder(tmp_path / "images"))
    assert class_names == ["cat", "dog"] and labels.tolist() == [0, 0, 0, 1, 1]
    assert [f.parent.name for f in files] == ["cat"] * 3 + ["dog"] * 2 and all(f.suffix == ".png" for f in files)


def test_latent_samples_without_a_vae_are_refused():
    generator = build_generator("T/4", input_size=8, in_channels=4, hidden_size=32, depth=1, num_heads=2,
                                num_classes=2)
    with pytest.raises(ValueError, match="--vae"):
        sample_images(generator, 2)


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    """A randomly initialised AutoencoderKL with one downsampling (factor 2) and 4 latent channels, saved."""
    from diffusers import AutoencoderKL

    folder = tmp_path_factory.mktemp("vae")
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                  norm_num_groups=4).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_encoded_folder_loads_as_training_data_with_scaled_posterior_draws(tmp_path, tiny_vae):
    images = write_image_folder(tmp_path / "images")
    out = tmp_path / "latents"
    encode_main([str(images), "--vae", str(tiny_vae), "--out", str(out), "--size", "16", "--workers", "0",
                 "--batch-size", "8", "--seed", "3"])
    latents = np.load(out / "images.npy")
    assert latents.shape == (5, 4, 8, 8) and latents.dtype == np.float32
    assert np.load(out / "labels.npy").tolist() == [0, 0, 0, 1, 1]
    assert (out / "class_names.txt").read_text().splitlines() == ["cat", "dog"]

    dataset = load_dataset(str(out))  # the round trip: what training reads is what was written
    x, y = dataset.get(torch.arange(5))
    assert dataset.sample_shape == (4, 8, 8) and torch.equal(x, torch.from_numpy(latents))
    assert y.tolist() == [0, 0, 0, 1, 1]

    # The same computation by hand: cropped pixels in [-1, 1], one posterior draw (one batch), times 0.18215.
    files, _, _ = list_image_folder(images)
    pixels = np.stack([center_crop_arr(Image.open(f).convert("RGB"), 16) for f in files])
    batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    vae = load_vae(tiny_vae)
    with torch.no_grad():
        expected = vae.encode(batch).latent_dist.sample(torch.Generator().manual_seed(3)) * 0.18215
    assert vae.config.scaling_factor == pytest.approx(0.18215)
    assert torch.allclose(x, expected, atol=1e-5)
    # The mirrored copies, with the same posterior noise (the released cache's moments_flip).
    with torch.no_grad():
        mirrored = vae.encode(batch.flip(-1)).latent_dist.sample(torch.Generator().manual_seed(3)) * 0.18215
    assert torch.allclose(torch.from_numpy(dataset.flipped[:]), mirrored, atol=1e-5)


@pytest.mark.slow
def test_latent_generator_samples_are_decoded_to_uint8_images(tmp_path, tiny_vae):
    latents = np.random.default_rng(0).standard_normal((8, 4, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "latents.npz", images=latents, labels=np.arange(8) % 2)
    cfg = TrainConfig(data=str(tmp_path / "latents.npz"), num_classes=2, out_dir=str(tmp_path / "run"),
                      generator="T/4", generator_overrides={"input_size": 8, "in_channels": 4, "hidden_size": 32,
                                                            "depth": 1, "num_heads": 2},
                      classes_per_step=2, gen_per_class=4, pos_per_class=4, unc_per_class=2, queue_per_class=8,
                      queue_global=8, push_per_step=8, steps=1, warmup_steps=1, save_every=1)
    Trainer(cfg).run()
    sample_main([str(tmp_path / "run" / "checkpoint.pt"), "--num", "6", "--vae", str(tiny_vae),
                 "--out", str(tmp_path / "samples")])
    with np.load(tmp_path / "samples" / "alpha1.npz") as f:
        assert f["arr_0"].shape == (6, 16, 16, 3) and f["arr_0"].dtype == np.uint8
        assert f["arr_1"].tolist() == [0, 1, 0, 1, 0, 1]
    grid = np.asarray(Image.open(tmp_path / "samples" / "alpha1.png"))
    assert grid.shape == (2 + 1 * 18, 2 + 10 * 18, 3)  # one row of ten 16x16 cells with 2-pixel gaps


@pytest.mark.slow
def test_released_latent_generator_samples_through_the_vae_in_one_command(tmp_path, tiny_vae):
    from test_image_official import write_release

    folder = write_release(tmp_path / "gen", "gen_latent")
    sample_main(["--release", str(folder), "--vae", str(tiny_vae), "--classes", "1,2,5", "--num", "3", "--out",
                 str(tmp_path / "samples")])
    with np.load(tmp_path / "samples" / "alpha1.npz") as f:
        assert f["arr_0"].shape == (3, 16, 16, 3) and f["arr_0"].dtype == np.uint8
        assert f["arr_1"].tolist() == [1, 2, 5]


@pytest.mark.slow
def test_latent_mae_trains_on_augmented_pixels_encoded_at_every_step(tmp_path, tiny_vae):
    from drifting_image.train import load_encoder
    from drifting_image.train_mae import MAETrainConfig, MAETrainer

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pixels.npz", images=rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8),
             labels=np.arange(8) % 2)
    cfg = MAETrainConfig(data=str(tmp_path / "pixels.npz"), num_classes=2, out_dir=str(tmp_path / "mae"),
                         augment=True, vae=str(tiny_vae), mae_overrides={"in_channels": 4, "width": 4},
                         steps=2, batch_size=4, warmup_steps=1, save_every=2)
    MAETrainer(cfg).run()
    mae = load_encoder(str(tmp_path / "mae" / "checkpoint.pt"), torch.device("cpu"))
    assert mae.in_channels == 4  # it trained on [4, 8, 8] latents: the 3-channel pixels would not fit it
