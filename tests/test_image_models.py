"""Image branch: generator, MAE and feature extractor (shapes, initialization, parameter counts)."""

import pytest
import torch

from drifting_image.features import image_features, map_features
from drifting_image.generator import (
    GENERATOR_SIZES,
    build_generator,
    count_parameters,
    parameter_table,
    rotary_embedding,
    sincos_2d_position_embedding,
)
from drifting_image.mae import (
    MAE_SIZES,
    build_mae,
    classification_weight,
    fold_patches,
    random_patch_mask,
    unfold_patches,
)


def tiny_generator(**overrides):
    kwargs = {"input_size": 8, "in_channels": 2, "patch_size": 2, "hidden_size": 32, "depth": 2, "num_heads": 2,
              "num_classes": 5}
    return build_generator("T/2", **{**kwargs, **overrides})


def test_paper_sizes_have_the_published_parameter_counts():
    counts = parameter_table()
    assert set(counts) == set(GENERATOR_SIZES)
    assert counts["B/2"] == pytest.approx(133e6, rel=0.01)  # paper Table 5: 133M
    assert counts["L/2"] == pytest.approx(463e6, rel=0.01)  # paper Table 5: 463M
    # The pixel models differ only by the patch embedding and output layer (16*16*3 = 768 vs 2*2*4 = 16 values).
    assert counts["B/16"] - counts["B/2"] == (768 - 16) * (2 * 768 + 1)
    assert counts["L/16"] - counts["L/2"] == (768 - 16) * (2 * 1024 + 1)


@pytest.mark.parametrize("size", sorted(GENERATOR_SIZES))
def test_every_size_maps_noise_to_a_sample_of_its_shape(size):
    with torch.device("meta"):
        model = build_generator(size)
        noise = torch.empty(2, *model.sample_shape)
        out = model(noise, torch.zeros(2, dtype=torch.long), torch.ones(2), model.draw_style(2))
    assert out.shape == noise.shape


def test_output_is_exactly_zero_at_initialization():
    model = tiny_generator()
    out = model(torch.randn(4, 2, 8, 8), torch.arange(4), torch.tensor([1.0, 1.5, 2.0, 4.0]))
    assert out.shape == (4, 2, 8, 8) and torch.equal(out, torch.zeros_like(out))


def test_output_depends_on_noise_class_alpha_and_style():
    torch.manual_seed(0)
    model = tiny_generator()
    for p in model.parameters():  # leave the zero initialization so that every input matters
        p.data.add_(0.05 * torch.randn_like(p))
    noise, style = torch.randn(1, 2, 8, 8), model.draw_style(1)
    base = model(noise, torch.tensor([1]), 1.0, style)
    assert not torch.allclose(base, model(torch.randn(1, 2, 8, 8), torch.tensor([1]), 1.0, style))
    assert not torch.allclose(base, model(noise, torch.tensor([2]), 1.0, style))
    assert not torch.allclose(base, model(noise, torch.tensor([1]), 3.0, style))
    assert not torch.allclose(base, model(noise, torch.tensor([1]), 1.0, (style + 1) % 64))
    # Without style indices the model draws them from the given random generator.
    a = model(noise, torch.tensor([1]), rng=torch.Generator().manual_seed(3))
    b = model(noise, torch.tensor([1]), rng=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_patchify_round_trip_and_position_embedding_init():
    model = tiny_generator(out_channels=2)
    x = torch.randn(3, 2, 8, 8)
    assert torch.equal(model.unpatchify(model.patchify(x)), x)
    table = torch.from_numpy(sincos_2d_position_embedding(32, 4)).float()
    assert torch.allclose(model.pos_embed[0], table)
    assert model.pos_embed.requires_grad  # learned, starting from sin-cos


def test_rotary_embedding_depends_only_on_relative_position():
    q, k = torch.randn(1, 1, 1, 16).expand(1, 1, 6, 16), torch.randn(1, 1, 1, 16).expand(1, 1, 6, 16)
    rq, rk = rotary_embedding(q, k)
    assert torch.allclose(rq.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    scores = rq[0, 0] @ rk[0, 0].T  # same vectors at every position: scores depend on i - j only
    assert torch.allclose(scores[0, 2], scores[3, 5], atol=1e-5)
    assert not torch.allclose(scores[0, 2], scores[0, 4], atol=1e-3)


def test_bad_inputs_are_rejected_with_the_expected_shape():
    model = tiny_generator()
    with pytest.raises(ValueError, match=r"noise must be \[B, 2, 8, 8\]"):
        model(torch.randn(1, 3, 8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match="labels must lie in"):
        model(torch.randn(1, 2, 8, 8), torch.tensor([5]))


def test_mae_parameter_counts_on_meta():
    with torch.device("meta"):
        counts = {name: count_parameters(build_mae(name).encoder) for name in MAE_SIZES}
    # Convolution weights grow with the square of the width: 640 / 256 = 2.5, so about 6.25x.
    assert counts["latent-640"] == pytest.approx(6.25 * counts["latent-256"], rel=0.01)
    assert counts["pixel-640"] > counts["latent-640"]  # the 3x3 stem sees 192 folded channels


@pytest.mark.parametrize("in_channels,size,input_patch", [(4, 32, 1), (3, 256, 8)])
def test_mae_maps_and_reconstruction_shapes(in_channels, size, input_patch):
    mae = build_mae("tiny", in_channels=in_channels, width=4, input_patch=input_patch, num_classes=7)
    x = torch.randn(2, in_channels, size, size)
    maps = mae.encode(x).maps
    assert {k: tuple(v.shape[1:]) for k, v in maps.items()} == {
        "conv1": (4, 32, 32), "layer1": (4, 32, 32), "layer2": (8, 16, 16), "layer3": (16, 8, 8),
        "layer4": (32, 4, 4),
    }
    mask = random_patch_mask(2, 32, 32)
    assert mae.reconstruct(x, mask).shape == x.shape
    loss, metrics = mae(x, torch.tensor([0, 6]), lambda_cls=0.1)
    assert loss.shape == (2,) and torch.isfinite(loss).all() and "accuracy" in metrics


def test_masking_zeroes_2x2_cells_with_probability_one_half():
    mask = random_patch_mask(64, 32, 32, generator=torch.Generator().manual_seed(0))
    assert mask.mean().item() == pytest.approx(0.5, abs=0.01)
    cells = mask.view(64, 16, 2, 16, 2)
    assert torch.equal(cells.amin(dim=(2, 4)), cells.amax(dim=(2, 4)))  # constant on each 2x2 cell


def test_reconstruction_loss_only_counts_masked_locations():
    mae = build_mae("tiny", width=4)
    x = torch.randn(2, 1, 32, 32)
    mask = random_patch_mask(2, 32, 32, generator=torch.Generator().manual_seed(1))
    loss, _ = mae(x, generator=torch.Generator().manual_seed(1))
    recon = mae.reconstruct(x, mask)
    expected = ((recon - x).square() * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3))
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_classification_weight_ramps_over_the_fine_tune_warmup():
    values = [classification_weight(s, finetune_start=100, warmup=10, final=0.1) for s in (0, 99, 100, 105, 110, 500)]
    assert values == pytest.approx([0, 0, 0, 0.05, 0.1, 0.1])


def test_feature_keys_and_shapes_follow_the_paper():
    mae = build_mae("tiny", width=4).requires_grad_(False)
    x = torch.randn(3, 1, 32, 32, requires_grad=True)
    feats = image_features(x, mae)
    maps = {"conv1": (32, 4), "layer1": (32, 4), "layer2": (16, 8), "layer3": (8, 16), "layer4": (4, 32),
            "layer1_blk2": (32, 4), "layer2_blk2": (16, 8), "layer2_blk4": (16, 8), "layer3_blk2": (8, 16),
            "layer3_blk4": (8, 16), "layer3_blk6": (8, 16), "layer4_blk2": (4, 32)}
    expected = {"global": (1, 1024), "norm_x": (1, 1)}
    for name, (side, c) in maps.items():
        expected.update({name: (side * side, c), f"{name}_mean": (1, c), f"{name}_std": (1, c),
                         f"{name}_mean_2": ((side // 2) ** 2, c), f"{name}_std_2": ((side // 2) ** 2, c),
                         f"{name}_mean_4": ((side // 4) ** 2, c), f"{name}_std_4": ((side // 4) ** 2, c)})
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == expected
    assert all(v.shape[0] == 3 for v in feats.values())
    sum(v.sum() for v in feats.values()).backward()  # gradients reach the input through the frozen encoder
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in mae.parameters())


def test_patch_statistics_match_a_direct_computation():
    fmap = torch.randn(2, 3, 4, 4)
    feats = map_features("f", fmap, patch_sizes=(2,))
    top_left = fmap[:, :, :2, :2].reshape(2, 3, 4)
    assert torch.allclose(feats["f_mean_2"][:, 0], top_left.mean(-1))
    assert torch.allclose(feats["f_std_2"][:, 0], (top_left.var(-1, unbiased=False) + 1e-6).sqrt())
    assert torch.allclose(feats["f"][:, 5], fmap[:, :, 1, 1])  # row-major locations


def test_max_locations_drops_only_the_keys_with_more_locations():
    mae = build_mae("tiny", width=4).requires_grad_(False)
    x = torch.randn(2, 1, 32, 32)
    every = image_features(x, mae, every_k_block=0)
    capped = image_features(x, mae, every_k_block=0, max_locations=64)
    assert list(capped) == [k for k, v in every.items() if v.shape[1] <= 64]  # same order, nothing recomputed
    assert "conv1" not in capped and "conv1_mean_2" not in capped and "conv1_mean_4" in capped
    assert "layer3" in capped and "layer2" not in capped
    for key, value in capped.items():
        assert torch.equal(value, every[key]), key


def test_std_features_match_the_biased_variance():
    fmap = torch.randn(2, 3, 8, 8) * 5 + 2
    feats = map_features("f", fmap, patch_sizes=(4,))
    assert torch.allclose(feats["f_std"][:, 0], (fmap.var(dim=(2, 3), unbiased=False) + 1e-6).sqrt(), atol=1e-5)
    cell = fmap[:, :, 4:, :4].reshape(2, 3, 16)  # bottom-left 4x4 cell = location 2 in row-major order
    assert torch.allclose(feats["f_std_4"][:, 2], (cell.var(-1, unbiased=False) + 1e-6).sqrt(), atol=1e-5)


def test_patch_folding_puts_the_channel_fastest_as_the_released_mae():
    x = torch.randn(2, 3, 16, 24)
    folded = fold_patches(x, 8)
    assert folded.shape == (2, 192, 2, 3) and torch.equal(unfold_patches(folded, 8), x)
    i, j, c, row, col = 3, 5, 2, 1, 2  # pixel (i, j) of patch (row, col), channel c -> channel (i * 8 + j) * 3 + c
    assert folded[0, (i * 8 + j) * 3 + c, row, col] == x[0, c, row * 8 + i, col * 8 + j]
