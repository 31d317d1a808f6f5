"""Regenerate tests/data/official_release_golden.npz from the authors' released JAX/Flax models.

``tests/test_image_official.py`` loads tiny models in the release format with ``drifting_image.official`` and
compares them with the outputs of the authors' own ``models/generator.py`` and ``models/mae_model.py`` stored here.
Nothing of the authors' code is stored: point this script at your checkout of their repository
(``lambertae/drifting``) and run it with an interpreter that has jax, flax, einops and msgpack (CPU is enough)::

    python tests/make_official_release_golden.py --official /path/to/drifting

What it does, for a latent-like and a pixel-like generator (``DitGen``) and MAE (``MAEResNetJAX``), in float32
(``use_bf16=False``) at the highest matmul precision:

1. builds the model from a release ``model_config`` and initializes it, which gives the parameter tree the released
   code expects (paths and shapes, stored here);
2. replaces every parameter by deterministic pseudo-random values (``synthetic_params``: integer hashing of the
   path and index, the same in the test without JAX or numpy's random streams), so no zero-initialized tensor
   hides a wrong mapping; stores the SHA-256 of ``flax.serialization.msgpack_serialize`` of that tree, which the
   test's writer must reproduce byte for byte;
3. runs the models: generator samples from explicit noise, style indices, labels and alpha; every feature key of
   ``get_activations`` (patch statistics 2 and 4, every second block) on inputs whose last one has 0.003x the
   amplitude of the others (there GroupNorm's epsilon matters); the noise and images are made by
   ``synthetic_values`` too, so only labels, CFG scales and style indices are stored among the inputs;
4. the same for a tiny ConvNeXt-V2 (the release's ``models/convnext.py``) on images as the pixel generators'
   activation function feeds it;
5. also stores the released rotary tables built in bfloat16 (``apply_rope`` with ``dtype=bfloat16``, 272 tokens,
   head size 64) and a small tree written by Flax with chunking forced, for the format reader.
"""

import argparse
import dataclasses
import hashlib
import importlib
import json
import sys
import types
import zlib

import numpy as np

GENERATORS = {
    "gen_latent": dict(cond_dim=64, num_classes=10, noise_classes=8, noise_coords=4, input_size=8, in_channels=4,
                       n_cls_tokens=4, patch_size=2, hidden_size=64, depth=2, num_heads=4, mlp_ratio=4.0,
                       out_channels=4, use_qknorm=True, use_swiglu=True, use_rope=True, use_rmsnorm=True,
                       use_bf16=False, attn_fp32=True, use_remat=False),
    "gen_pixel": dict(cond_dim=64, num_classes=10, noise_classes=8, noise_coords=4, input_size=32, in_channels=3,
                      n_cls_tokens=4, patch_size=8, hidden_size=64, depth=2, num_heads=4, mlp_ratio=4.0,
                      out_channels=3, use_qknorm=True, use_swiglu=True, use_rope=True, use_rmsnorm=True,
                      use_bf16=False, attn_fp32=True, use_remat=False),
}
# base_channels must be a multiple of 32: the released decoder normalizes its concatenations with 32 groups.
MAES = {
    "mae_latent": (dict(base_channels=32, patch_size=2, dropout_prob=0.0, layers=[2, 2, 2, 2], in_channels=4,
                        use_bf16=False, input_patch_size=1, num_classes=10), 8),
    "mae_pixel": (dict(base_channels=32, patch_size=2, dropout_prob=0.0, layers=[2, 2, 2, 2], in_channels=3,
                       use_bf16=False, input_patch_size=4, num_classes=10), 32),
}
SMALL_AMPLITUDE = 0.003
CONVNEXT = {"depths": [1, 1, 2, 1], "dims": [8, 16, 32, 64]}  # ConvNeXt-V2 base: [3, 3, 27, 3], [128, ..., 1024]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def synthetic_values(path: str, shape) -> np.ndarray:
    """Deterministic values in [-sqrt(3), sqrt(3)) (unit variance) for one parameter, from uint64 hashing of its
    path and element index (splitmix64), identical on every numpy version."""
    n = int(np.prod(shape, dtype=np.int64))
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + np.uint64(zlib.crc32(path.encode())) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    unit = (x >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return ((unit * 2 - 1) * np.sqrt(3)).reshape(shape)


def synthetic_params(paths_and_shapes) -> dict:
    """{path: float32 array}: kernels at 1/sqrt(fan-in), norm gains 1 +- 0.2, biases and embeddings 0.2 and
    0.5 wide. Every value is non-zero almost surely, so every tensor matters to the outputs."""
    out = {}
    for path, shape in paths_and_shapes:
        shape, leaf, values = tuple(shape), path.rsplit("/", 1)[-1], synthetic_values(path, shape)
        if leaf == "kernel":
            values = values / np.sqrt(np.prod(shape[:-1]))
        elif leaf in ("scale", "weight"):
            values = 1 + 0.2 * values
        elif leaf == "bias":
            values = 0.2 * values
        else:  # embedding tables, pos_embed, cls_embed
            values = 0.5 * values
        out[path] = values.astype(np.float32)
    return out


def generator_noise(name: str, config: dict, batch: int = 3) -> np.ndarray:
    """[batch, H, W, C] noise of a generator case (NHWC, as the released generator takes it)."""
    size, channels = config["input_size"], config["in_channels"]
    return synthetic_values(f"{name}/noise", (batch, size, size, channels)).astype(np.float32)


def mae_inputs(name: str, size: int, channels: int) -> np.ndarray:
    """[3, size, size, channels] MAE inputs (NHWC); the last one at SMALL_AMPLITUDE times the others."""
    images = synthetic_values(f"{name}/images", (3, size, size, channels)).astype(np.float32)
    images[-1] *= np.float32(SMALL_AMPLITUDE)
    return images


def convnext_images() -> np.ndarray:
    """[1, 32, 32, 3] generated-like images, partly outside [-1, 1] (the release clips them)."""
    return (1.2 * synthetic_values("convnext/images", (1, 32, 32, 3))).astype(np.float32)


def flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}/") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def unflatten(flat):
    tree = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, help="checkout of the authors' repository (lambertae/drifting)")
    parser.add_argument("--out", default="tests/data/official_release_golden.npz")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    from flax import serialization

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_default_matmul_precision", "highest")
    sys.path.insert(0, args.official)
    generator_module = importlib.import_module("models.generator")
    mae_module = importlib.import_module("models.mae_model")

    rng = np.random.default_rng(0)
    arrays, manifest = {}, {}

    def store_artifact(name, kind, config, params_tree):
        flat = flatten(params_tree)
        paths = sorted((path, list(value.shape)) for path, value in flat.items())
        params = synthetic_params(paths)
        encoded = serialization.msgpack_serialize(unflatten(params))
        manifest[name] = {"kind": kind, "model_config": config, "params": paths,
                          "msgpack_sha256": hashlib.sha256(encoded).hexdigest()}
        return jax.tree.map(jnp.asarray, serialization.msgpack_restore(encoded))

    def generate(module, c, cfg_scale, noise_labels, x):
        return module.generate_image(x, module.c_cfg_noise_to_cond(c, cfg_scale, noise_labels))

    for name, config in GENERATORS.items():
        model = generator_module.DitGen(**config)
        assert {f.name for f in dataclasses.fields(model)} - {"parent", "name"} == set(config)
        B = 3
        noise = generator_noise(name, config, B)
        labels = np.array([0, 3, 9], dtype=np.int32)
        alpha = np.array([1.0, 1.7, 3.5], dtype=np.float32)
        style = rng.integers(0, config["noise_classes"], size=(B, config["noise_coords"])).astype(np.int32)
        init = model.init({"params": jax.random.PRNGKey(0)}, labels, alpha, style, noise, method=generate)
        params = store_artifact(name, "gen", config, init["params"])
        samples = model.apply({"params": params}, labels, alpha, style, noise, method=generate)
        arrays.update({f"{name}/labels": labels, f"{name}/alpha": alpha,
                       f"{name}/style": style, f"{name}/samples": np.asarray(samples)})

    for name, (config, size) in MAES.items():
        model_config = dict(config)
        model = mae_module.MAEResNetJAX(num_classes=model_config.pop("num_classes"), **model_config)
        images = mae_inputs(name, size, config["in_channels"])
        init = model.init({"params": jax.random.PRNGKey(1), "masking": jax.random.PRNGKey(2)}, images,
                          np.zeros(3, dtype=np.int32), train=False)
        params = store_artifact(name, "mae", config, init["params"])
        features = model.apply({"params": params}, images, method=model.get_activations, patch_mean_size=[2, 4],
                               patch_std_size=[2, 4], use_std=True, use_mean=True, every_k_block=2)
        arrays.update({f"{name}/features/{key}": np.asarray(value) for key, value in features.items()})

    # ConvNeXt-V2 features as the release's activation function computes them for pixel generators: the samples
    # in [-1, 1] to [0, 1] (clipped), ImageNet normalization, then get_activations (which resizes to 224).
    sys.modules.setdefault("torch", types.ModuleType("torch"))  # convnext.py imports torch for its converter only
    convnext_module = importlib.import_module("models.convnext")
    importlib.import_module("utils.hsdp_util").set_global_mesh(1)
    model = convnext_module.ConvNextV2(depths=CONVNEXT["depths"], dims=CONVNEXT["dims"])
    images = convnext_images()
    init = model.init(jax.random.PRNGKey(3), jnp.zeros((1, 224, 224, 3)))
    params = store_artifact("convnext", "convnext", CONVNEXT, init["params"])
    x = (jnp.clip((images + 1) / 2, 0, 1) - jnp.array(IMAGENET_MEAN)) / jnp.array(IMAGENET_STD)
    features = model.apply({"params": params}, x, method=model.get_activations)
    arrays.update({f"convnext/features/{key}": np.asarray(value) for key, value in features.items()})

    # The rotary tables of bf16 models with attention outside float32: q = [1..1, 0..0] rotates into [cos, sin].
    n, head_dim = 272, 64
    unit = jnp.concatenate([jnp.ones((1, n, 1, head_dim // 2)), jnp.zeros((1, n, 1, head_dim // 2))], axis=-1)
    rotated, _ = generator_module.apply_rope(unit, unit, dtype=jnp.bfloat16)
    for key, table in (("cos", rotated[0, :, 0, :head_dim // 2]), ("sin", rotated[0, :, 0, head_dim // 2:])):
        arrays[f"rope_bf16/{key}_bits"] = np.asarray(table, dtype=np.float32).view(np.uint32) >> 16  # exact bf16

    # A small tree in Flax's own encoding, with chunking forced down to 64 bytes.
    tree = {"b": {"kernel": np.arange(40, dtype=np.float32).reshape(5, 8) / 7, "scalar": np.float32(2.5)},
            "a": np.arange(6, dtype=np.int32).reshape(2, 3), "bf16": jnp.asarray([1.5, -2.25, 3e-3], jnp.bfloat16)}
    chunk_size = serialization.MAX_CHUNK_SIZE
    serialization.MAX_CHUNK_SIZE = 64
    encoded = serialization.msgpack_serialize(tree)
    serialization.MAX_CHUNK_SIZE = chunk_size
    arrays["format/flax_bytes"] = np.frombuffer(encoded, dtype=np.uint8)
    arrays["format/b/kernel"], arrays["format/a"] = tree["b"]["kernel"], tree["a"]
    arrays["format/bf16"] = np.asarray(tree["bf16"], dtype=np.float32)

    arrays["manifest"] = np.array(json.dumps(manifest))
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays)} arrays; jax {jax.__version__}")


if __name__ == "__main__":
    main()
