"""drifting_image.official against the authors' released code: tiny models in the release format, converted and
run by us, reproduce the outputs of their models/generator.py and models/mae_model.py (float32, stored in
tests/data/official_release_golden.npz by tests/make_official_release_golden.py, which needs JAX; these tests
do not)."""

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from drifting_image import official
from drifting_image.features import image_features
from drifting_image.generator import DriftingDiT, rotary_tables

HERE = Path(__file__).parent
GOLDEN = np.load(HERE / "data" / "official_release_golden.npz")
MANIFEST = json.loads(str(GOLDEN["manifest"]))
TOLERANCE = 1e-4

_spec = importlib.util.spec_from_file_location("release_golden", HERE / "make_official_release_golden.py")
release_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(release_golden)  # only its numpy helpers; JAX is imported inside its main()


def write_release(folder: Path, name: str) -> Path:
    """The golden case ``name`` as a release folder (metadata.json, ema_params.msgpack)."""
    case = MANIFEST[name]
    params = release_golden.synthetic_params(case["params"])
    folder.mkdir(parents=True, exist_ok=True)
    official.write_flax_msgpack(official.unflatten(params), folder / official.PARAMS)
    metadata = {"format": "flax.msgpack", "kind": case["kind"], "model_config": case["model_config"], "step": 7}
    (folder / official.METADATA).write_text(json.dumps(metadata))
    return folder


def relative_error(ours: torch.Tensor, theirs: np.ndarray) -> float:
    """Largest over samples of |ours - theirs| / |theirs| (Euclidean norms of each sample's values)."""
    ours = ours.detach().double().numpy().reshape(len(theirs), -1)
    theirs = theirs.astype(np.float64).reshape(len(theirs), -1)
    return float((np.linalg.norm(ours - theirs, axis=1) / np.linalg.norm(theirs, axis=1)).max())


def generator_errors(model: DriftingDiT, name: str) -> float:
    noise = release_golden.generator_noise(name, MANIFEST[name]["model_config"])
    with torch.no_grad():
        samples = model(torch.from_numpy(noise).permute(0, 3, 1, 2), torch.from_numpy(GOLDEN[f"{name}/labels"]).long(),
                        torch.from_numpy(GOLDEN[f"{name}/alpha"]), torch.from_numpy(GOLDEN[f"{name}/style"]).long())
    return relative_error(samples.permute(0, 2, 3, 1), GOLDEN[f"{name}/samples"])


def mae_errors(mae, name: str) -> dict[str, float]:
    """Relative error of every released feature key (channels-last, as the release stores them)."""
    config = MANIFEST[name]["model_config"]
    size = {"mae_latent": 8, "mae_pixel": 32}[name]
    images = release_golden.mae_inputs(name, size, config["in_channels"])
    with torch.no_grad():
        ours = image_features(torch.from_numpy(images).permute(0, 3, 1, 2), mae)
    prefix = f"{name}/features/"
    theirs = {key[len(prefix):]: GOLDEN[key] for key in GOLDEN.files if key.startswith(prefix)}
    assert set(ours) - {"global"} == set(theirs)  # 'global' is the raw sample, added outside the release's MAE
    return {key: relative_error(ours[key], value) for key, value in theirs.items()}


@pytest.mark.parametrize("name", ["gen_latent", "gen_pixel"])
def test_released_generator_reproduces_the_official_samples(tmp_path, name):
    model, metadata = official.load_release(write_release(tmp_path / name, name))
    assert isinstance(model, DriftingDiT) and metadata["step"] == 7
    assert generator_errors(model, name) <= TOLERANCE


@pytest.mark.parametrize("name", ["mae_latent", "mae_pixel"])
def test_released_mae_reproduces_every_official_feature(tmp_path, name):
    mae, _ = official.load_release(write_release(tmp_path / name, name))
    errors = mae_errors(mae, name)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOLERANCE, (worst, errors[worst])


def test_the_comparison_tells_the_wrong_epsilon_and_patch_order_apart(tmp_path, monkeypatch):
    """The small-amplitude input is what makes GroupNorm's epsilon visible; the pixel MAE's patch order changes
    everything. With torch's default epsilon or pixel_unshuffle's (c, h2, w2) order the test above would fail."""
    mae, _ = official.load_release(write_release(tmp_path / "latent", "mae_latent"))
    for module in mae.modules():
        if isinstance(module, torch.nn.GroupNorm):
            module.eps = 1e-5
    assert max(mae_errors(mae, "mae_latent").values()) > 100 * TOLERANCE

    pixel, _ = official.load_release(write_release(tmp_path / "pixel", "mae_pixel"))
    monkeypatch.setattr("drifting_image.features.fold_patches",
                        lambda x, p: torch.nn.functional.pixel_unshuffle(x, p))
    monkeypatch.setattr("drifting_image.mae.fold_patches", lambda x, p: torch.nn.functional.pixel_unshuffle(x, p))
    assert max(mae_errors(pixel, "mae_pixel").values()) > 100 * TOLERANCE


@pytest.mark.parametrize("name", ["gen_latent", "gen_pixel", "mae_latent", "mae_pixel"])
def test_our_writer_is_byte_for_byte_flax_and_the_round_trip_is_exact(tmp_path, name):
    folder = write_release(tmp_path / "release", name)
    written = (folder / official.PARAMS).read_bytes()
    assert hashlib.sha256(written).hexdigest() == MANIFEST[name]["msgpack_sha256"]  # what Flax wrote
    model, _ = official.load_release(folder)
    again = official.save_release(model, tmp_path / "again", step=7)
    assert (again / official.PARAMS).read_bytes() == written
    reloaded, metadata = official.load_release(again)
    # The released constructors' full argument list, as the authors' loaders pass it to DitGen / MAEResNetJAX.
    assert metadata["kind"] == MANIFEST[name]["kind"] and metadata["model_config"] == MANIFEST[name]["model_config"]
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_reader_decodes_flax_bytes_with_chunks_scalars_and_bfloat16(tmp_path, monkeypatch):
    encoded = GOLDEN["format/flax_bytes"].tobytes()
    path = tmp_path / "tree.msgpack"
    path.write_bytes(encoded)
    tree = official.read_flax_msgpack(path)
    assert np.array_equal(tree["b"]["kernel"], GOLDEN["format/b/kernel"])  # chunked by Flax into 64-byte pieces
    assert np.array_equal(tree["a"], GOLDEN["format/a"]) and tree["a"].dtype == np.int32
    assert tree["b"]["scalar"] == np.float32(2.5) and np.array_equal(tree["bf16"], GOLDEN["format/bf16"])
    monkeypatch.setattr(official, "MAX_CHUNK_BYTES", 64)  # our writer chunks the same way and reads back
    official.write_flax_msgpack({"kernel": tree["b"]["kernel"]}, tmp_path / "ours.msgpack")
    assert np.array_equal(official.read_flax_msgpack(tmp_path / "ours.msgpack")["kernel"], tree["b"]["kernel"])


def test_bf16_rotary_tables_are_the_released_ones():
    cos, sin = rotary_tables(272, 64, bf16_tables=True)
    for key, ours in (("cos", cos[:, :32]), ("sin", sin[:, 32:])):
        theirs = (GOLDEN[f"rope_bf16/{key}_bits"].astype(np.uint32) << 16).view(np.float32)
        assert np.array_equal(ours.numpy(), theirs), key
    exact_cos, _ = rotary_tables(272, 64)
    assert (cos - exact_cos).abs().max() > 0.5  # positions above 256 merge in pairs, angles move by up to ~1 rad


RELEASED_GENERATORS = {  # attention precision of the five released generators (all compute in bf16)
    "ablation": True, "latent_B_sota": False, "latent_L_sota": False, "pixel_B_sota": True, "pixel_L_sota": True,
}


@pytest.mark.parametrize("name,attn_fp32", sorted(RELEASED_GENERATORS.items()))
def test_bf16_rotary_tables_are_switched_on_where_the_release_builds_them(name, attn_fp32):
    config = {**MANIFEST["gen_latent"]["model_config"], "use_bf16": True, "attn_fp32": attn_fp32}
    assert official.generator_kwargs(config)["bf16_rope_tables"] is (not attn_fp32)


def test_load_release_refuses_anything_it_cannot_map_exactly(tmp_path):
    folder = write_release(tmp_path / "gen", "gen_latent")
    tree = official.read_flax_msgpack(folder / official.PARAMS)
    flat = official.flatten(tree)

    def check(flat_tree, match, metadata_change=None):
        target = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        target.mkdir()
        official.write_flax_msgpack(official.unflatten(flat_tree), target / official.PARAMS)
        metadata = json.loads((folder / official.METADATA).read_text())
        metadata["model_config"].update(metadata_change or {})
        (target / official.METADATA).write_text(json.dumps(metadata))
        with pytest.raises((KeyError, ValueError), match=match):
            official.load_release(target)

    missing = dict(flat)
    del missing["LightningDiT_0/blocks_1/SwiGLUFFN_0/TorchLinear_2/Dense_0/kernel"]
    check(missing, "missing LightningDiT_0/blocks_1/SwiGLUFFN_0/TorchLinear_2/Dense_0/kernel")
    check({**flat, "extra/kernel": np.zeros(3, np.float32)}, "unused released tensor extra/kernel")
    check({**flat, "noise_embeds_2/embedding": np.zeros((8, 63), np.float32)},
          r"noise_embeds_2/embedding has shape \(8, 63\), expected \(8, 64\)")
    check(flat, "use_swiglu=False is not supported", {"use_swiglu": False})
    check(flat, "cond_dim=32 differs from hidden_size=64", {"cond_dim": 32})
    check(flat, "'dropout' is not an argument", {"dropout": 0.1})
    wrapped = {f"params/{path}": value for path, value in flat.items()}  # a 'params' wrapper is accepted
    official.write_flax_msgpack(official.unflatten(wrapped), folder / official.PARAMS)
    assert isinstance(official.load_release(folder)[0], DriftingDiT)


def test_convert_writes_checkpoints_that_sampling_and_training_load(tmp_path):
    from drifting_image.sample import load_generator
    from drifting_image.train import load_encoder

    official.main(["convert", str(write_release(tmp_path / "gen", "gen_pixel")), str(tmp_path / "gen.pt")])
    assert generator_errors(load_generator(tmp_path / "gen.pt"), "gen_pixel") <= TOLERANCE
    official.main(["convert", str(write_release(tmp_path / "mae", "mae_pixel")), str(tmp_path / "mae.pt")])
    mae = load_encoder(str(tmp_path / "mae.pt"), torch.device("cpu"))
    assert max(mae_errors(mae, "mae_pixel").values()) <= TOLERANCE
    official.main(["export", str(tmp_path / "gen.pt"), str(tmp_path / "exported")])
    assert (tmp_path / "exported" / official.PARAMS).read_bytes() == (tmp_path / "gen" / official.PARAMS).read_bytes()


def test_sample_command_draws_the_requested_classes_from_a_release_folder(tmp_path):
    from drifting_image.sample import main as sample_main
    from drifting_image.sample import sample_images

    folder = write_release(tmp_path / "gen", "gen_pixel")
    sample_main(["--release", str(folder), "--classes", "3,7", "--alpha", "1.5", "--num", "4", "--out",
                 str(tmp_path / "samples")])
    with np.load(tmp_path / "samples" / "alpha1.5.npz") as f:
        images, labels = f["arr_0"], f["arr_1"]
    assert labels.tolist() == [3, 7, 3, 7] and images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    expected, _ = sample_images(official.load_release(folder)[0], 4, 1.5, classes=[3, 7])
    assert np.array_equal(images, expected)
    assert (tmp_path / "samples" / "alpha1.5.png").is_file()


def test_uint8_conversion_truncates_as_the_release():
    from drifting_image.sample import to_uint8

    images = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 1.5]).view(1, 1, 1, 8)
    # clip((x + 1) / 2, 0, 1) * 255, truncated: 0 -> 127 (rounding would give 128), 0.5 -> 191.
    assert to_uint8(images).ravel().tolist() == [0, 0, 0, 127, 191, 254, 255, 255]
