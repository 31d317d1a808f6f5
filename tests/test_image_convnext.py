"""ConvNeXt-V2 features of the pixel models: a random-init ``transformers`` ConvNextV2Model with the tiny released
ConvNextV2's parameters reproduces every feature key of the release's models/convnext.py (golden outputs from
tests/make_official_release_golden.py), and the features drive a generator's drifting loss."""

import re

import numpy as np
import pytest
import torch

from drifting_image import official
from drifting_image.convnext import ConvNeXtFeatures
from test_image_official import GOLDEN, MANIFEST, TOLERANCE, relative_error, release_golden

transformers = pytest.importorskip("transformers")

# The release's Flax names -> ConvNextV2Model's (the inverse of the release's own converter, convert_weights_to_jax).
RENAMES = [
    (r"downsample_layers_0/layers_0/", "embeddings.patch_embeddings."),
    (r"downsample_layers_0/layers_1/", "embeddings.layernorm."),
    (r"downsample_layers_(\d)/layers_(\d)/", r"encoder.stages.\1.downsampling_layer.\2."),
    (r"stages_(\d)/layers_(\d+)/norm/", r"encoder.stages.\1.layers.\2.layernorm."),
    (r"stages_(\d)/layers_(\d+)/", r"encoder.stages.\1.layers.\2."),
    (r"^norm/", "layernorm."),
    (r"/", "."), (r"kernel$", "weight"), (r"scale$", "weight"), (r"gamma$", "weight"), (r"beta$", "bias"),
]


def hf_param(flax_path: str, shape) -> official.Param:
    name = flax_path
    for pattern, replacement in RENAMES:
        name = re.sub(pattern, replacement, name)
    layout = "copy"
    if flax_path.endswith("kernel"):
        layout = "conv" if len(shape) == 4 else "dense"
    return official.Param(flax_path, name, layout)


@pytest.fixture(scope="module")
def features():
    case = MANIFEST["convnext"]
    config = transformers.ConvNextV2Config(num_channels=3, hidden_sizes=case["model_config"]["dims"],
                                           depths=case["model_config"]["depths"])
    model = transformers.ConvNextV2Model(config)
    params = [hf_param(path, shape) for path, shape in case["params"]]
    official.load_state(model, params, release_golden.synthetic_params(case["params"]), "convnext")
    return ConvNeXtFeatures(model)


def test_convnext_features_match_the_release_key_by_key(features):
    images = torch.from_numpy(release_golden.convnext_images()).permute(0, 3, 1, 2)
    with torch.no_grad():
        ours = features(images)
    prefix = "convnext/features/"
    theirs = {key[len(prefix):]: GOLDEN[key] for key in GOLDEN.files if key.startswith(prefix)}
    assert set(ours) == set(theirs)
    errors = {key: relative_error(ours[key], value) for key, value in theirs.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, (worst, errors[worst])


def test_features_load_from_a_local_folder_and_pass_gradients_to_the_images(tmp_path, features):
    features.model.save_pretrained(tmp_path / "convnext")
    loaded = ConvNeXtFeatures.from_folder(tmp_path / "convnext")
    images = (torch.rand(2, 3, 32, 32) * 1.6 - 0.8).requires_grad_()
    out = loaded(images)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert {k: tuple(v.shape) for k, v in out.items()}["convenxt_stage_3"] == (2, 49, 64)
    out["convenxt_stage_2"].square().mean().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_a_pixel_generator_trains_with_the_convnext_keys_beside_the_mae(tmp_path, features):
    from drifting_image.train import TrainConfig, Trainer

    features.model.save_pretrained(tmp_path / "convnext")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "pixels.npz", images=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
             labels=np.arange(16) % 2)
    cfg = TrainConfig(data=str(tmp_path / "pixels.npz"), num_classes=2, out_dir=str(tmp_path / "run"),
                      generator="T/4", generator_overrides={"in_channels": 3, "hidden_size": 32, "depth": 1,
                                                            "num_heads": 2, "num_registers": 2},
                      convnext=str(tmp_path / "convnext"), classes_per_step=2, gen_per_class=4, pos_per_class=4,
                      unc_per_class=2, queue_per_class=8, queue_global=16, push_per_step=16, steps=1)
    trainer = Trainer(cfg)
    trainer.fill_queue()
    metrics = trainer.train_step()
    assert torch.isfinite(metrics["loss"]) and "global/loss" in metrics
    assert {f"convenxt_stage_{i}/loss" for i in (1, 2, 3)} | {"global_mean/loss", "global_std/loss"} <= set(metrics)
