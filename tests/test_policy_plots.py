"""Training-curve plots read DP's logs.json.txt: one record per epoch, epoch means of per-batch metrics."""
import json

import imageio.v3 as iio

from drifting_policy.plots import DISTANCE_KEY, FIT_KEY, epoch_means, epoch_records, plot_training_curves


def test_epoch_records_and_means(tmp_path):
    lines = [
        {"epoch": 0, "train_loss": 3.0, DISTANCE_KEY: 0.4},
        {"epoch": 0, "train_loss": 2.0, DISTANCE_KEY: 0.2, "test/mean_score": 0.1},
        {"epoch": 1, "train_loss": 1.0, DISTANCE_KEY: 0.1, "val_loss": 0.5, FIT_KEY: 0.02},
    ]
    assert [r["train_loss"] for r in epoch_records(lines)] == [2.0, 1.0]  # the last line of each epoch
    epochs, means = epoch_means(lines, DISTANCE_KEY)
    assert epochs == [0, 1] and means == [0.30000000000000004, 0.1]
    assert epoch_means(lines, "missing") == ([], [])

    log = tmp_path / "logs.json.txt"
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    def without(*keys):
        return [{k: v for k, v in r.items() if k not in keys} for r in lines]

    widths = {}
    for name, rows in (("both", lines), ("distance", without(FIT_KEY)), ("neither", without(FIT_KEY, DISTANCE_KEY))):
        log.write_text("".join(json.dumps(line) + "\n" for line in rows))
        out = plot_training_curves(log, tmp_path / f"{name}.png", title="t")
        assert out.stat().st_size > 1000
        widths[name] = iio.imread(out).shape[1]
    # a panel for each fit metric the run logged, none for those it did not
    assert widths["both"] > widths["distance"] > widths["neither"]


def test_rollout_strip_shows_evenly_spaced_frames(tmp_path):
    """Frame i of the video is a flat grey of level 10 i: the strip must hold frames 0, 5 and 10 of 11, in order."""
    import numpy as np

    from drifting_policy.plots import main, rollout_strip

    frames = np.stack([np.full((16, 16, 3), 10 * i, dtype=np.uint8) for i in range(11)])
    video = tmp_path / "episode.mp4"
    iio.imwrite(video, frames, fps=10, macro_block_size=1)
    strip = iio.imread(rollout_strip(video, tmp_path / "strip.png", frames=3))
    assert strip.shape == (16, 3 * 16 + 2 * 4, 3)
    levels = [int(strip[:, x * 20:x * 20 + 16].mean()) for x in range(3)]
    assert [round(level / 10) for level in levels] == [0, 5, 10]  # lossy video codec: within a few levels
    main(["strip", str(video), str(tmp_path / "cli.png"), "--frames", "2"])
    assert iio.imread(tmp_path / "cli.png").shape[1] == 2 * 16 + 4
