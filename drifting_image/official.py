"""The authors' released models (JAX/Flax) as our PyTorch modules, and ours in their format.

A release folder (Hugging Face ``Goodeat/drifting``, ``models/{gen,mae}/jax/<name>/``; a training run of the
released code writes the same pair to ``<workdir>/params_ema/``) holds:

- ``metadata.json``: ``kind`` ("gen" or "mae") and ``model_config``, the keyword arguments of the released
  ``DitGen`` or ``MAEResNetJAX``; every other field is informational;
- ``ema_params.msgpack``: the EMA parameters as written by ``flax.serialization.msgpack_serialize``: nested maps
  with sorted string keys, arrays as msgpack ext type 1 holding (shape, dtype name, raw C-order bytes), numpy
  scalars as ext type 3, leaves over 1 GiB split into ``__msgpack_chunked_array__`` maps, and possibly a top-level
  ``params`` wrapper.

``load_release`` reads it with msgpack and numpy alone (no JAX) and returns a ``DriftingDiT`` or ``ResNetMAE``. It
is strict: every released tensor is used exactly once, every one of ours is filled, shapes must agree, and
configurations our modules cannot express are refused; each error names the key. ``save_release`` writes one of
our models in the same format, byte for byte what Flax writes for the same tree, so the released code loads it.

    python -m drifting_image.official convert <release folder> <checkpoint.pt>   # for sample / train's mae_checkpoint
    python -m drifting_image.official export <checkpoint.pt> <release folder>    # for the released code

Layouts: Flax dense kernels are (in, out), torch's (out, in); Flax conv kernels are HWIO, torch's OIHW; the
release keeps 32 style tables ``noise_embeds_{i}`` where we stack them into one [32, 64, D] tensor.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import torch
from torch import nn

from drifting import checkpoint
from drifting_image.generator import GENERATOR_SIZES, DriftingDiT
from drifting_image.mae import ResNetMAE

METADATA = "metadata.json"
PARAMS = "ema_params.msgpack"
CHUNKED = "__msgpack_chunked_array__"
MAX_CHUNK_BYTES = 2**30  # flax.serialization.MAX_CHUNK_SIZE
EXT_NDARRAY, EXT_COMPLEX, EXT_NPSCALAR = 1, 2, 3


# -- the Flax msgpack format ----------------------------------------------------------------------------------
def _array_from_payload(payload: bytes) -> np.ndarray:
    shape, dtype_name, buffer = msgpack.unpackb(payload, raw=True)
    if dtype_name == b"bfloat16":  # numpy has no bfloat16: widen the 16 stored bits to float32 exactly
        bits = np.frombuffer(buffer, dtype=np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(buffer, dtype=np.dtype(dtype_name.decode())).reshape(shape)


def _ext_hook(code: int, payload: bytes):
    if code == EXT_NDARRAY:
        return _array_from_payload(payload)
    if code == EXT_NPSCALAR:
        return _array_from_payload(payload)[()]
    if code == EXT_COMPLEX:
        real, imag = msgpack.unpackb(payload)
        return complex(real, imag)
    raise ValueError(f"unknown msgpack extension type {code} (Flax writes 1, 2 and 3)")


def _unchunk(tree):
    if not isinstance(tree, dict):
        return tree
    if CHUNKED in tree:
        shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
        chunks = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
        return np.concatenate(chunks).reshape(shape)
    return {key: _unchunk(value) for key, value in tree.items()}


def read_flax_msgpack(path: str | Path) -> dict:
    """The nested dict of numpy arrays in a file written by ``flax.serialization.msgpack_serialize``."""
    with open(path, "rb") as f:
        tree = msgpack.unpackb(f.read(), ext_hook=_ext_hook, raw=False)
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: expected a map of parameters at the top, found a {type(tree).__name__}")
    return _unchunk(tree)


def _ext_default(value):
    if isinstance(value, np.ndarray):
        payload = msgpack.packb((value.shape, value.dtype.name, value.tobytes("C")), use_bin_type=True)
        return msgpack.ExtType(EXT_NDARRAY, payload)
    raise TypeError(f"cannot write a {type(value).__name__} into a Flax msgpack file")


def _chunk_large(tree: dict) -> dict:
    out = {}
    for key in sorted(tree):  # Flax's tree_map leaves the keys sorted; the bytes depend on the order
        value = tree[key]
        if isinstance(value, dict):
            out[key] = _chunk_large(value)
        elif value.nbytes > MAX_CHUNK_BYTES:
            flat, step = value.reshape(-1), MAX_CHUNK_BYTES // value.dtype.itemsize
            chunks = [flat[i:i + step] for i in range(0, flat.size, step)]
            out[key] = {CHUNKED: True, "shape": {str(i): d for i, d in enumerate(value.shape)},
                        "chunks": {str(i): c for i, c in enumerate(chunks)}}
        else:
            out[key] = value
    return out


def write_flax_msgpack(tree: dict, path: str | Path) -> None:
    """Write a nested dict of numpy arrays as ``flax.serialization.msgpack_serialize`` does."""
    Path(path).write_bytes(msgpack.packb(_chunk_large(tree), default=_ext_default, strict_types=True))


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a/b/c": leaf} of a nested dict."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        flat.update(flatten(value, path + "/") if isinstance(value, dict) else {path: value})
    return flat


def unflatten(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return tree


# -- parameter names ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One released tensor: its Flax path, our state_dict key, and how the layouts differ.

    layout: 'copy' (same array), 'dense' (Flax (in, out) = torch weight transposed), 'conv' (Flax HWIO, torch
    OIHW), 'stacked' (row ``index`` of our stacked tensor).
    """

    flax: str
    torch: str
    layout: str = "copy"
    index: int | None = None

    def to_flax(self, tensor: torch.Tensor) -> np.ndarray:
        value = tensor.detach().cpu().float().numpy()
        if self.layout == "dense":
            value = value.T
        elif self.layout == "conv":
            value = value.transpose(2, 3, 1, 0)
        elif self.layout == "stacked":
            value = value[self.index]
        return np.ascontiguousarray(value, dtype=np.float32)

    def flax_shape(self, tensor: torch.Tensor) -> tuple[int, ...]:
        shape = tuple(tensor.shape)
        return {"dense": shape[::-1], "conv": shape[2:] + shape[1::-1], "stacked": shape[1:]}.get(self.layout, shape)

    def to_torch(self, value: np.ndarray) -> torch.Tensor:
        if self.layout == "dense":
            value = value.T
        elif self.layout == "conv":
            value = value.transpose(3, 2, 0, 1)
        return torch.from_numpy(np.array(value, dtype=np.float32, order="C"))


def _linear(flax: str, torch_name: str) -> list[Param]:
    """A released ``TorchLinear``/``Dense`` (kernel, bias) and our ``nn.Linear`` (weight, bias)."""
    return [Param(f"{flax}/kernel", f"{torch_name}.weight", "dense"), Param(f"{flax}/bias", f"{torch_name}.bias")]


def _group_norm(flax: str, torch_name: str) -> list[Param]:
    return [Param(f"{flax}/scale", f"{torch_name}.weight"), Param(f"{flax}/bias", f"{torch_name}.bias")]


def generator_params(model: DriftingDiT) -> list[Param]:
    """Every tensor of the released ``DitGen`` and where it lives in ours (names from its Flax modules:
    explicit names in ``setup``, ``ClassName_k`` for unnamed submodules of compact methods)."""
    dit = "LightningDiT_0"
    params = [Param("Embed_0/embedding", "class_embed.weight")]
    params += [Param(f"noise_embeds_{i}/embedding", "style_embed", "stacked", i) for i in range(model.num_style)]
    params += _linear("TimestepEmbedder_0/TorchLinear_0/Dense_0", "alpha_embed.mlp.0")
    params += _linear("TimestepEmbedder_0/TorchLinear_1/Dense_0", "alpha_embed.mlp.2")
    params += [Param("RMSNorm_0/weight", "alpha_norm.weight")]
    params += _linear(f"{dit}/TorchLinear_0/Dense_0", "x_embed")
    params += [Param(f"{dit}/pos_embed", "pos_embed")]
    params += _linear(f"{dit}/TorchLinear_1/Dense_0", "register_proj")
    params += [Param(f"{dit}/cls_embed", "register_embed")]
    for i in range(len(model.blocks)):
        block, ours = f"{dit}/blocks_{i}", f"blocks.{i}"
        params += [Param(f"{block}/RMSNorm_0/weight", f"{ours}.norm1.weight"),
                   Param(f"{block}/RMSNorm_1/weight", f"{ours}.norm2.weight")]
        params += _linear(f"{block}/Attention_0/TorchLinear_0/Dense_0", f"{ours}.attn.qkv")
        params += [Param(f"{block}/Attention_0/q_norm/weight", f"{ours}.attn.q_norm.weight"),
                   Param(f"{block}/Attention_0/k_norm/weight", f"{ours}.attn.k_norm.weight")]
        params += _linear(f"{block}/Attention_0/TorchLinear_1/Dense_0", f"{ours}.attn.proj")
        for k, name in enumerate(("w1", "w3", "w2")):
            params += _linear(f"{block}/SwiGLUFFN_0/TorchLinear_{k}/Dense_0", f"{ours}.mlp.{name}")
        params += _linear(f"{block}/TorchLinear_0/Dense_0", f"{ours}.adaLN_modulation.1")
    params += [Param(f"{dit}/FinalLayer_0/RMSNorm_0/weight", "final_layer.norm.weight")]
    params += _linear(f"{dit}/FinalLayer_0/TorchLinear_0/Dense_0", "final_layer.adaLN_modulation.1")
    params += _linear(f"{dit}/FinalLayer_0/TorchLinear_1/Dense_0", "final_layer.linear")
    return params


DECODER_UPS = ("up43", "up32", "up21", "up10")


def mae_params(model: ResNetMAE) -> list[Param]:
    """Every tensor of the released ``MAEResNetJAX`` and where it lives in ours. The released blocks create their
    projection shortcut only where the shape changes, as ours do."""
    params = [Param("encoder/conv1/kernel", "encoder.stem.0.weight", "conv")]
    params += _group_norm("encoder/gn1", "encoder.stem.1")
    for s, stage in enumerate(model.encoder.stages):
        for b, block in enumerate(stage):
            flax, ours = f"encoder/stages_{s}/layers_{b}", f"encoder.stages.{s}.{b}"
            params += [Param(f"{flax}/conv1/kernel", f"{ours}.conv1.weight", "conv")]
            params += _group_norm(f"{flax}/gn1", f"{ours}.norm1")
            params += [Param(f"{flax}/conv2/kernel", f"{ours}.conv2.weight", "conv")]
            params += _group_norm(f"{flax}/gn2", f"{ours}.norm2")
            if not isinstance(block.shortcut, nn.Identity):
                params += [Param(f"{flax}/proj_conv/kernel", f"{ours}.shortcut.0.weight", "conv")]
                params += _group_norm(f"{flax}/proj_gn", f"{ours}.shortcut.1")
        params += _group_norm(f"encoder/layer{s + 1}_norm", f"encoder.stage_norms.{s}")
    params += [Param("decoder/bridge/conv/kernel", "decoder.bridge.0.weight", "conv")]
    params += _group_norm("decoder/bridge/gn", "decoder.bridge.1")
    for i, name in enumerate(DECODER_UPS):
        flax, ours = f"decoder/{name}", f"decoder.ups.{i}"
        params += _group_norm(f"{flax}/concat_norm_fn", f"{ours}.norm")
        for k, conv in enumerate(("proj", "refine")):
            params += [Param(f"{flax}/{conv}/conv/kernel", f"{ours}.convs.{k}.0.weight", "conv")]
            params += _group_norm(f"{flax}/{conv}/gn", f"{ours}.convs.{k}.1")
    params += [Param("decoder/head/kernel", "decoder.head.weight", "conv"),
               Param("decoder/head/bias", "decoder.head.bias")]
    params += _linear("fc", "classifier")
    return params


# -- configurations -------------------------------------------------------------------------------------------
# The released DitGen's dataclass defaults, for keys a model_config leaves out.
DITGEN_DEFAULTS = {
    "num_classes": 1001, "noise_classes": 0, "noise_coords": 1, "input_size": 32, "in_channels": 3,
    "n_cls_tokens": 0, "patch_size": 2, "hidden_size": 1152, "depth": 28, "num_heads": 16, "mlp_ratio": 4.0,
    "out_channels": 3, "use_qknorm": False, "use_swiglu": False, "use_rope": False, "use_rmsnorm": False,
    "use_bf16": False, "attn_fp32": True, "use_remat": False,
}
# The architecture switches of DitGen that DriftingDiT implements only in one position.
DITGEN_REQUIRED = {"use_qknorm": True, "use_swiglu": True, "use_rope": True, "use_rmsnorm": True}
MAE_DEFAULTS = {"num_classes": 1000, "in_channels": 3, "base_channels": 64, "patch_size": 4, "dropout_prob": 0.0,
                "layers": [2, 2, 2, 2], "use_bf16": False, "input_patch_size": 1}


def _with_defaults(config: dict, defaults: dict, required: tuple[str, ...], source: str) -> dict:
    unknown = sorted(set(config) - set(defaults) - set(required))
    if unknown:
        raise ValueError(f"{source}: model_config key {unknown[0]!r} is not an argument of the released model")
    missing = [key for key in required if key not in config]
    if missing:
        raise ValueError(f"{source}: model_config has no {missing[0]!r}")
    return {**defaults, **config}


def generator_kwargs(config: dict, source: str = "model_config") -> dict:
    """DriftingDiT's arguments for a released ``DitGen`` model_config; refuses variants ours cannot express."""
    c = _with_defaults(config, DITGEN_DEFAULTS, ("cond_dim",), source)
    for key, value in DITGEN_REQUIRED.items():
        if bool(c[key]) != value:
            raise ValueError(f"{source}: model_config {key}={c[key]} is not supported (DriftingDiT has {key}={value})")
    if c["cond_dim"] != c["hidden_size"]:
        raise ValueError(f"{source}: model_config cond_dim={c['cond_dim']} differs from hidden_size="
                         f"{c['hidden_size']}; DriftingDiT conditions with hidden_size")
    for key in ("n_cls_tokens", "noise_classes"):
        if c[key] <= 0:
            raise ValueError(f"{source}: model_config {key}={c[key]} is not supported (DriftingDiT needs at least 1)")
    return {
        "input_size": c["input_size"], "in_channels": c["in_channels"], "patch_size": c["patch_size"],
        "hidden_size": c["hidden_size"], "depth": c["depth"], "num_heads": c["num_heads"],
        "mlp_ratio": float(c["mlp_ratio"]), "num_classes": c["num_classes"], "num_registers": c["n_cls_tokens"],
        "num_style": c["noise_coords"], "style_vocab": c["noise_classes"], "out_channels": c["out_channels"],
        # bf16 compute with attention outside float32 builds the rotary tables in bf16 (latent_B/L_sota).
        "bf16_rope_tables": bool(c["use_bf16"]) and not bool(c["attn_fp32"]),
    }


def mae_kwargs(config: dict, source: str = "model_config") -> dict:
    """ResNetMAE's arguments for a released ``MAEResNetJAX`` model_config."""
    c = _with_defaults(config, MAE_DEFAULTS, (), source)
    if c["dropout_prob"] != 0:
        raise ValueError(f"{source}: model_config dropout_prob={c['dropout_prob']} is not supported (ResNetMAE "
                         "has no dropout)")
    if len(c["layers"]) != 4:
        raise ValueError(f"{source}: model_config layers={c['layers']} must have 4 stages")
    return {"in_channels": c["in_channels"], "width": c["base_channels"], "layers": tuple(c["layers"]),
            "input_patch": c["input_patch_size"], "mask_patch": c["patch_size"], "num_classes": c["num_classes"]}


def generator_release_config(model: DriftingDiT) -> dict:
    """The released ``DitGen`` model_config of one of our generators (all its constructor arguments)."""
    hidden = model.class_embed.embedding_dim
    return {
        "cond_dim": hidden, "num_classes": model.num_classes, "noise_classes": model.style_vocab,
        "noise_coords": model.num_style, "input_size": model.input_size, "in_channels": model.in_channels,
        "n_cls_tokens": model.num_registers, "patch_size": model.patch_size, "hidden_size": hidden,
        "depth": len(model.blocks), "num_heads": model.blocks[0].attn.num_heads, "mlp_ratio": model.mlp_ratio,
        "out_channels": model.out_channels, **DITGEN_REQUIRED,
        # Only the bf16 rotary tables change the function; they come with bf16 compute in the released code.
        "use_bf16": model.bf16_rope_tables, "attn_fp32": not model.bf16_rope_tables, "use_remat": False,
    }


def mae_release_config(model: ResNetMAE) -> dict:
    return {
        "base_channels": model.encoder.widths[0], "patch_size": model.mask_patch, "dropout_prob": 0.0,
        "layers": [len(stage) for stage in model.encoder.stages], "in_channels": model.in_channels,
        "use_bf16": False, "input_patch_size": model.input_patch, "num_classes": model.classifier.out_features,
    }


# -- loading and saving ---------------------------------------------------------------------------------------
def load_state(model: nn.Module, params: list[Param], flat: dict[str, Any], source: str) -> None:
    """Fill ``model`` (possibly on the meta device) from released tensors {flax path: array}: every released tensor
    used once, every one of ours set. ``flat`` is consumed, so each array is freed once converted."""
    state = model.state_dict()
    filled = {}
    for param in params:
        if param.flax not in flat:
            raise KeyError(f"{source}: missing {param.flax} (for our {param.torch})")
        value = flat.pop(param.flax)
        expected = param.flax_shape(state[param.torch])
        if not isinstance(value, np.ndarray) or value.shape != expected:
            found = value.shape if isinstance(value, np.ndarray) else type(value).__name__
            raise ValueError(f"{source}: {param.flax} has shape {found}, expected {expected} for our {param.torch}")
        tensor = param.to_torch(value)
        if param.layout == "stacked":
            filled.setdefault(param.torch, torch.empty(state[param.torch].shape))[param.index] = tensor
        else:
            filled[param.torch] = tensor
    if flat:
        raise KeyError(f"{source}: unused released tensor {sorted(flat)[0]} ({len(flat)} unused in all)")
    unset = sorted(set(state) - set(filled))
    if unset:
        raise KeyError(f"{source}: nothing released fills our {unset[0]}")
    model.load_state_dict(filled, strict=True, assign=True)


def release_tree(model: nn.Module, params: list[Param]) -> dict:
    state = model.state_dict()
    return unflatten({param.flax: param.to_flax(state[param.torch]) for param in params})


def read_release(artifact_dir: str | Path) -> tuple[dict, dict]:
    """(metadata, parameter tree) of a release folder; a top-level ``params`` wrapper is removed."""
    folder = Path(artifact_dir)
    for name in (METADATA, PARAMS):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"release folder {folder} has no {name}")
    metadata = json.loads((folder / METADATA).read_text())
    for key in ("kind", "model_config"):
        if key not in metadata:
            raise KeyError(f"{folder / METADATA}: no {key!r}")
    tree = read_flax_msgpack(folder / PARAMS)
    if set(tree) == {"params"}:
        tree = tree["params"]
    return metadata, tree


def load_release(artifact_dir: str | Path) -> tuple[DriftingDiT | ResNetMAE, dict]:
    """(model, metadata) of a release folder: a ``DriftingDiT`` for kind "gen", a ``ResNetMAE`` for kind "mae",
    with the released weights, in eval mode, on the CPU in float32."""
    metadata, tree = read_release(artifact_dir)
    flat = flatten(tree)
    del tree  # the arrays now live only in flat, which load_state empties as it converts them
    source = str(Path(artifact_dir) / PARAMS)
    kind, config = metadata["kind"], metadata["model_config"]
    with torch.device("meta"):  # no initialization: every tensor comes from the release
        if kind == "gen":
            model = DriftingDiT(**generator_kwargs(config, source))
            params = generator_params(model)
        elif kind == "mae":
            model = ResNetMAE(**mae_kwargs(config, source))
            params = mae_params(model)
        else:
            raise ValueError(f"{Path(artifact_dir) / METADATA}: kind {kind!r} is neither 'gen' nor 'mae'")
    load_state(model, params, flat, source)
    return model.eval(), metadata


def save_release(model: DriftingDiT | ResNetMAE, artifact_dir: str | Path, **metadata) -> Path:
    """Write ``model`` as a release folder (metadata.json, ema_params.msgpack) that the released code loads;
    ``metadata`` adds fields (e.g. step, ema_decay)."""
    if isinstance(model, DriftingDiT):
        kind, config, params = "gen", generator_release_config(model), generator_params(model)
    elif isinstance(model, ResNetMAE):
        kind, config, params = "mae", mae_release_config(model), mae_params(model)
    else:
        raise TypeError(f"save_release takes a DriftingDiT or a ResNetMAE, not a {type(model).__name__}")
    folder = Path(artifact_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_flax_msgpack(release_tree(model, params), folder / PARAMS)
    info = {"format": "flax.msgpack", "kind": kind, "backend": "jax", "path": f"params_ema/{PARAMS}",
            **metadata, "model_config": config}
    (folder / METADATA).write_text(json.dumps(info, indent=2) + "\n")
    return folder


# -- our checkpoint format ------------------------------------------------------------------------------------
def generator_checkpoint(model: DriftingDiT, step: int = 0) -> dict:
    """What ``drifting_image.sample.load_generator`` reads: the config names a size and overrides the rest."""
    kwargs = generator_kwargs(generator_release_config(model))
    num_classes = kwargs.pop("num_classes")
    size = next((name for name, dims in GENERATOR_SIZES.items()
                 if all(kwargs[k] == v for k, v in vars(dims).items())), "B/2")
    overrides = {k: v for k, v in kwargs.items() if getattr(GENERATOR_SIZES[size], k, None) != v}
    state = model.state_dict()
    return {"step": step, "config": {"generator": size, "num_classes": num_classes, "generator_overrides": overrides},
            "generator": state, "ema": {"model": state, "step": step}}


def mae_checkpoint(model: ResNetMAE, step: int = 0) -> dict:
    """What ``drifting_image.train.load_encoder`` reads (``mae_checkpoint`` of the generator's training)."""
    kwargs = mae_kwargs(mae_release_config(model))
    kwargs["layers"] = list(kwargs["layers"])
    return {"step": step, "mae_kwargs": kwargs, "ema": {"model": model.state_dict(), "step": step}}


def convert(artifact_dir: str | Path, out: str | Path) -> Path:
    """A release folder -> one of our checkpoints (generator or MAE, by the release's kind)."""
    model, metadata = load_release(artifact_dir)
    step = int(metadata.get("step", 0) or 0)
    state = generator_checkpoint(model, step) if isinstance(model, DriftingDiT) else mae_checkpoint(model, step)
    state["release_metadata"] = metadata
    return checkpoint.atomic_save(state, out)


def export(checkpoint_path: str | Path, artifact_dir: str | Path) -> Path:
    """One of our generator or MAE checkpoints (its EMA weights) -> a release folder."""
    from drifting_image.sample import load_generator
    from drifting_image.train import load_encoder

    state = checkpoint.load(checkpoint_path)
    model = load_encoder(str(checkpoint_path), torch.device("cpu")) if "mae_kwargs" in state else \
        load_generator(checkpoint_path)
    return save_release(model, artifact_dir, step=int(state.get("step", 0)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drifting-image official", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    to_ours = commands.add_parser("convert", help="release folder -> our checkpoint")
    to_ours.add_argument("release")
    to_ours.add_argument("out")
    to_theirs = commands.add_parser("export", help="our checkpoint -> release folder")
    to_theirs.add_argument("checkpoint")
    to_theirs.add_argument("release")
    args = parser.parse_args(argv)
    if args.command == "convert":
        print(f"wrote {convert(args.release, args.out)}")
    else:
        print(f"wrote {export(args.checkpoint, args.release)}")


if __name__ == "__main__":
    main()
