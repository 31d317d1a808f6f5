"""Regenerate tests/data/official_drift_loss.npz from the authors' released JAX ``drift_loss.py``.

The test ``test_matches_official_release`` compares our ``drift_loss`` (value, info and gradient) with these
reference outputs. Nothing of the authors' code is stored here: point this script at your own checkout of
their repository (``lambertae/drifting``) and run it with an interpreter that has jax and einops::

    python tests/make_official_golden.py --official /path/to/drifting --out tests/data/official_drift_loss.npz
"""

import argparse
import importlib.util
import sys

import numpy as np


def cases(rng):
    # (B, G, P, U, S, coordinate scale, weighted?)
    shapes = [(3, 8, 8, 0, 2, 1.0, False), (4, 16, 12, 5, 16, 30.0, True), (2, 6, 1, 0, 8, 1e-3, False),
              (5, 10, 20, 4, 64, 1.0, True), (1, 32, 32, 0, 3, 5.0, False)]
    for B, G, P, U, S, scale, weighted in shapes:
        case = {
            "gen": rng.normal(size=(B, G, S)) * scale,
            "pos": (rng.normal(size=(B, P, S)) + 0.5) * scale,
            "neg": rng.normal(size=(B, U, S)) * scale * 1.5,
        }
        if weighted:
            case["weight_gen"] = rng.uniform(0.5, 1.5, size=(B, G))
            case["weight_pos"] = rng.uniform(0.5, 1.5, size=(B, P))
            case["weight_neg"] = rng.uniform(0.0, 3.0, size=(B, U))
        yield {k: v.astype(np.float32) for k, v in case.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, help="folder holding the authors' drift_loss.py")
    parser.add_argument("--out", default="tests/data/official_drift_loss.npz")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_default_matmul_precision", "highest")
    _clip = jnp.clip
    # The release calls jnp.clip(x, a_min=...), a keyword newer JAX versions dropped.
    jnp.clip = lambda x, min=None, max=None, a_min=None, a_max=None: _clip(
        x, min=a_min if min is None else min, max=a_max if max is None else max)
    spec = importlib.util.spec_from_file_location("official_drift_loss", f"{args.official}/drift_loss.py")
    official = importlib.util.module_from_spec(spec)
    sys.modules["official_drift_loss"] = official
    spec.loader.exec_module(official)

    def total(gen, pos, neg, kwargs):
        loss, info = official.drift_loss(gen, pos, neg, **kwargs)
        return loss.sum(), (loss, info)

    arrays = {}
    for i, case in enumerate(cases(np.random.default_rng(0))):
        kwargs = {k: jnp.asarray(v) for k, v in case.items() if k not in ("gen", "pos", "neg")}
        neg = jnp.asarray(case["neg"]) if case["neg"].shape[1] else None
        # jax.grad differentiates with respect to the first argument (gen) only.
        grad, (loss, info) = jax.grad(total, has_aux=True)(jnp.asarray(case["gen"]), jnp.asarray(case["pos"]), neg,
                                                           kwargs)
        for k, v in case.items():
            arrays[f"{i}/{k}"] = v
        arrays[f"{i}/loss"] = np.asarray(loss)
        arrays[f"{i}/grad"] = np.asarray(grad)
        arrays[f"{i}/scale"] = np.asarray(info["scale"])
        for tau in (0.02, 0.05, 0.2):
            arrays[f"{i}/drift_sq_norm_{tau:g}"] = np.asarray(info[f"loss_{tau}"])
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays)} arrays from {i + 1} cases")


if __name__ == "__main__":
    main()
