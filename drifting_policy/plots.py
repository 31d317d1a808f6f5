"""PNG curves of a run from its ``logs.json.txt``: epoch-mean train and validation loss, test score, DP's
``train_action_mse_error`` (sampled chunks vs a training batch's, any method), and for the drifting policy the
distance of its generated chunks to the demonstrations (its loss is a normalised drift, nearly constant by design,
so those two are the curves that show learning)."""
from __future__ import annotations

from pathlib import Path

from drifting.files import atomic_path
from drifting.json_log import read_json_log


def epoch_records(records: list[dict]) -> list[dict]:
    """The last line of each epoch: the one carrying the epoch's mean train loss, val loss and rollout scores."""
    last = {}
    for record in records:
        if "epoch" in record:
            last[record["epoch"]] = record
    return [last[epoch] for epoch in sorted(last)]


def _series(records: list[dict], key: str) -> tuple[list, list]:
    points = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


DISTANCE_KEY = "policy/gen_to_demo_rms"
FIT_KEY = "train_action_mse_error"


def epoch_means(records: list[dict], key: str) -> tuple[list, list]:
    """Per epoch, the mean of ``key`` over the lines (batches) that carry it."""
    sums: dict[int, list] = {}
    for record in records:
        if record.get(key) is not None and "epoch" in record:
            sums.setdefault(record["epoch"], []).append(record[key])
    epochs = sorted(sums)
    return epochs, [sum(sums[e]) / len(sums[e]) for e in epochs]


def plot_training_curves(log_path: str | Path, out_path: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = read_json_log(log_path)
    records = epoch_records(lines)
    # optional panels, shown when the run logged them: (epochs, values, y label)
    fit_panels = [(*_series(records, FIT_KEY), "train_action_mse_error"),
                  (*epoch_means(lines, DISTANCE_KEY), "generated-to-demonstration RMS (epoch mean)")]
    fit_panels = [panel for panel in fit_panels if panel[0]]
    fig, axes = plt.subplots(1, 2 + len(fit_panels), figsize=(5.5 * (2 + len(fit_panels)), 4))
    ax_loss, ax_score = axes[0], axes[1]
    losses = []
    for key, label in (("train_loss", "train loss (epoch mean)"), ("val_loss", "val loss")):
        epochs, values = _series(records, key)
        if values:
            ax_loss.plot(epochs, values, label=label, marker="." if len(values) < 50 else None)
            losses += values
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    if losses and min(losses) > 0:
        ax_loss.set_yscale("log")
    if ax_loss.lines:
        ax_loss.legend()
    for key in ("test/mean_score", "train/mean_score"):
        epochs, values = _series(records, key)
        if values:
            ax_score.plot(epochs, values, label=key, marker="o")
    ax_score.set_xlabel("epoch")
    ax_score.set_ylabel("score")
    ax_score.set_ylim(-0.02, 1.02)
    if ax_score.lines:
        ax_score.legend()
    for ax, (epochs, values, label) in zip(axes[2:], fit_panels, strict=True):
        ax.plot(epochs, values, marker="." if len(epochs) < 50 else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if min(values) > 0:
            ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()

    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(out_path)


def rollout_strip(video_path: str | Path, out_path: str | Path, frames: int = 6) -> Path:
    """A PNG of ``frames`` frames of a rollout video, evenly spaced from the first to the last, side by side: an
    episode at a glance (for docs and reports)."""
    import imageio.v3 as iio
    import numpy as np

    video = iio.imread(video_path)  # (N, H, W, 3)
    if len(video) == 0:
        raise ValueError(f"{video_path}: the video holds no frames")
    picks = np.linspace(0, len(video) - 1, num=min(frames, len(video))).round().astype(int)
    gap = np.full((video.shape[1], 4, video.shape[3]), 255, dtype=video.dtype)
    strip = np.concatenate([part for i in picks for part in (video[i], gap)][:-1], axis=1)
    with atomic_path(out_path) as tmp:
        iio.imwrite(tmp, strip, extension=Path(out_path).suffix)
    return Path(out_path)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Figures of a run: training curves from its log, or a strip of "
                                                 "frames from one of its rollout videos.")
    sub = parser.add_subparsers(dest="command", required=True)
    curves = sub.add_parser("curves", help="logs.json.txt -> PNG of the training curves")
    curves.add_argument("log"), curves.add_argument("out")
    strip = sub.add_parser("strip", help="rollout video -> PNG of evenly spaced frames")
    strip.add_argument("video"), strip.add_argument("out")
    strip.add_argument("--frames", type=int, default=6)
    args = parser.parse_args(argv)
    if args.command == "curves":
        print(plot_training_curves(args.log, args.out))
    else:
        print(rollout_strip(args.video, args.out, args.frames))


if __name__ == "__main__":
    main()
