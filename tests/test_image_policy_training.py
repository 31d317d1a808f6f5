"""Image tasks end to end (slow): expert demonstrations with rendered images -> the real task and policy configs ->
training, rollouts on the image env, checkpoints and videos -> ``drifting-policy eval`` of the export."""
import json
import math

import pytest

from drifting.json_log import read_json_log

pytestmark = pytest.mark.slow


def pusht_image_data(tmp_path):
    from envs.pusht.generate import generate

    buffer, summary = generate(3, seed=0, images=True, show_progress=False)
    assert summary["episodes"] == 3 and buffer["img"].shape[1:] == (96, 96, 3)
    path = buffer.save_to_path(tmp_path / "pusht_image.zarr.zip")
    return [f"task.zarr_path={path}"], {"image": [3, 96, 96]}


def lift_image_data(tmp_path):
    from envs.robomimic.generate import generate

    path = generate("lift", episodes=3, seed=0, out=tmp_path / "lift_image.hdf5", images=True)
    return [f"task.dataset_path={path}"], {"agentview_image": [3, 84, 84], "robot0_eye_in_hand_image": [3, 84, 84]}


@pytest.mark.parametrize("task, make_data", [("pusht_image", pusht_image_data), ("lift_image", lift_image_data)])
def test_image_task_trains_evaluates_and_exports(task, make_data, tmp_path, monkeypatch):
    from drifting_policy import cli

    data_overrides, image_shapes = make_data(tmp_path)
    run_dir = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    cli.main([
        "train", f"task={task}", "method=drifting", "network=unet_image", *data_overrides, f"run_dir={run_dir}",
        "policy.config.down_dims=[32,64,128]", "policy.config.n_generated=4", "task.dataset.val_ratio=0.34",
        "task.env_runner.n_train=1", "task.env_runner.n_train_vis=1", "task.env_runner.n_test=2",
        "task.env_runner.n_test_vis=1", "task.env_runner.n_envs=3",
        "dataloader.batch_size=8", "dataloader.num_workers=0", "val_dataloader.batch_size=8",
        "val_dataloader.num_workers=0", "training.num_epochs=2", "training.max_train_steps=3",
        "training.max_val_steps=1", "training.rollout_every=1", "training.lr_warmup_steps=1", "logging.mode=disabled",
    ])
    records = read_json_log(run_dir / "logs.json.txt")
    scored = [r for r in records if "test/mean_score" in r]
    assert [r["epoch"] for r in scored] == [0, 1]
    for record in scored:
        assert 0.0 <= record["test/mean_score"] <= 1.0 and 0.0 <= record["train/mean_score"] <= 1.0
        assert math.isfinite(record["train_loss"]) and math.isfinite(record["val_loss"])
    videos = sorted(p.name for p in (run_dir / "media").iterdir())
    assert videos == ["test_100000.mp4", "train_0.mp4"]
    assert all((run_dir / "media" / name).stat().st_size > 1000 for name in videos)
    assert (run_dir / "plots" / "training_curves.png").exists()

    export = run_dir / "pretrained" / "last"
    exported_obs = json.loads((export / "config.json").read_text())["shape_meta"]["obs"]
    assert {key: exported_obs[key]["shape"] for key in image_shapes} == image_shapes
    cli.main(["eval", f"checkpoint={export}", "n_test=1", "n_train=0", "n_envs=1", f"output_dir={tmp_path / 'eval'}"])
    eval_log = json.loads((tmp_path / "eval" / "eval_log.json").read_text())
    assert 0.0 <= eval_log["test/mean_score"] <= 1.0
