import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from drifting_policy.data import ReplayBuffer
from drifting_policy.data.dataset import KeySpec, SequenceDataset
from drifting_policy.normalizer import LinearNormalizer

LENGTHS = (20, 25, 18, 30, 22, 19, 27, 24, 21, 26)
SHAPE_META = {
    "obs": {"image": {"shape": [3, 12, 12], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}},
    "action": {"shape": [2]},
}


@pytest.fixture(scope="module")
def pusht_like(tmp_path_factory):
    """A small dataset with PushT's keys and per-step shapes (images shrunk to 12x12)."""
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer.create_empty()
    for length in LENGTHS:
        buffer.add_episode({
            "action": rng.uniform(0, 512, size=(length, 2)).astype(np.float32),
            "img": rng.integers(0, 256, size=(length, 12, 12, 3), dtype=np.uint8),
            "keypoint": rng.uniform(0, 512, size=(length, 9, 2)).astype(np.float32),
            "state": rng.uniform(0, 512, size=(length, 5)).astype(np.float32),
        })
    return buffer.save_to_path(tmp_path_factory.mktemp("data") / "pusht_like.zarr"), buffer


def test_key_spec_parsing():
    assert KeySpec.parse("state[:2]") == KeySpec("state", None, 2, sliced=True)
    assert KeySpec.parse("keypoint") == KeySpec("keypoint")
    assert str(KeySpec.parse("x[1:-1]")) == "x[1:-1]"
    with pytest.raises(ValueError, match="bad key spec 'state\\[2\\]'"):
        KeySpec.parse("state[2]")


def test_lowdim_windows_concatenate_flattened_keys(pusht_like):
    path, buffer = pusht_like
    dataset = SequenceDataset(path, horizon=16, pad_before=1, pad_after=7, obs_keys=["keypoint", "state[:2]"])
    item = dataset[0]
    assert item["obs"].shape == (16, 20) and item["action"].shape == (16, 2)
    assert item["obs"].dtype == torch.float32 and item["action"].dtype == torch.float32
    frames = np.clip(np.arange(-1, 15), 0, None)  # first window starts one frame before episode 0
    expected = np.concatenate([buffer["keypoint"][frames].reshape(16, 18), buffer["state"][frames, :2]], axis=1)
    np.testing.assert_array_equal(item["obs"].numpy(), expected)
    np.testing.assert_array_equal(item["action"].numpy(), buffer["action"][frames])
    # windows per episode: L - T + pad_before + pad_after + 1
    assert len(dataset) == sum(length - 16 + 1 + 7 + 1 for length in LENGTHS)

    short = SequenceDataset(path, horizon=16, pad_before=1, pad_after=7, n_obs_steps=2,
                            obs_keys=["keypoint", "state[:2]"])
    np.testing.assert_array_equal(short[5]["obs"].numpy(), dataset[5]["obs"][:2].numpy())


def test_shape_meta_images_are_float_chw_in_unit_range(pusht_like):
    path, buffer = pusht_like
    dataset = SequenceDataset(path, horizon=16, pad_before=1, pad_after=7, n_obs_steps=2, shape_meta=SHAPE_META,
                              zarr_keys={"image": "img", "agent_pos": "state[:2]"})
    item = dataset[3]  # start 2: frames 2, 3 of episode 0
    assert item["obs"]["image"].shape == (2, 3, 12, 12) and item["obs"]["image"].dtype == torch.float32
    assert item["obs"]["agent_pos"].shape == (2, 2) and item["action"].shape == (16, 2)
    np.testing.assert_allclose(item["obs"]["image"].numpy(), buffer["img"][2:4].transpose(0, 3, 1, 2) / 255, rtol=1e-6)
    np.testing.assert_array_equal(item["obs"]["agent_pos"].numpy(), buffer["state"][2:4, :2])
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["obs"]["image"].shape == (4, 2, 3, 12, 12) and batch["action"].shape == (4, 16, 2)
    assert batch["obs"]["image"].min() >= 0 and batch["obs"]["image"].max() <= 1


def test_validation_split_is_by_episode(pusht_like):
    path, _ = pusht_like
    kwargs = dict(horizon=4, obs_keys=["state"], val_ratio=0.2, seed=42)
    train = SequenceDataset(path, **kwargs)
    val = train.get_validation_dataset()
    assert val.train_mask.sum() == 2 and train.train_mask.sum() == 8
    assert not (train.train_mask & val.train_mask).any()
    assert len(train) + len(val) == len(SequenceDataset(path, horizon=4, obs_keys=["state"]))
    np.testing.assert_array_equal(SequenceDataset(path, **kwargs).train_mask, train.train_mask)
    capped = SequenceDataset(path, max_train_episodes=3, **kwargs)
    assert capped.train_mask.sum() == 3 and capped.get_validation_dataset().train_mask.sum() == 7


def test_normalizer_fits_every_field(pusht_like):
    path, buffer = pusht_like
    lowdim = SequenceDataset(path, horizon=4, obs_keys=["keypoint", "state[:2]"]).get_normalizer()
    assert isinstance(lowdim, LinearNormalizer) and sorted(lowdim.keys()) == ["action", "obs"]
    y = lowdim["action"].normalize(buffer["action"])
    torch.testing.assert_close(y.amin(0), -torch.ones(2))
    torch.testing.assert_close(y.amax(0), torch.ones(2))

    image = SequenceDataset(path, horizon=4, shape_meta=SHAPE_META,
                            zarr_keys={"image": "img", "agent_pos": "state[:2]"},
                            action_normalizer="identity").get_normalizer()
    assert sorted(image.keys()) == ["action", "agent_pos", "image"]
    torch.testing.assert_close(image["image"].normalize(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(image["action"].normalize(buffer["action"]), torch.from_numpy(buffer["action"]))
    torch.testing.assert_close(image["agent_pos"].normalize(buffer["state"][:, :2]).amax(0), torch.ones(2))


def test_in_memory_buffer_and_max_abs(pusht_like):
    _, buffer = pusht_like
    dataset = SequenceDataset(buffer, horizon=2, obs_keys=["state"], obs_normalizer="max_abs")
    y = dataset.get_normalizer()["obs"].normalize(buffer["state"])
    assert torch.isclose(y.abs().max(), torch.tensor(1.0))
    assert dataset.get_all_actions().shape == (sum(LENGTHS), 2)


def test_clear_errors(pusht_like):
    path, buffer = pusht_like
    with pytest.raises(ValueError, match=r"pusht_like\.zarr.*'keypoints'.*available keys: "
                                         r"\['action', 'img', 'keypoint', 'state'\]"):
        SequenceDataset(path, horizon=4, obs_keys=["keypoints"])
    with pytest.raises(ValueError, match=r"pusht_like\.zarr: 'agent_pos' expects shape \[3\] "
                                         r"but key\(s\) \['state\[:2\]'\] give 2"):
        bad = {**SHAPE_META, "obs": {**SHAPE_META["obs"], "agent_pos": {"shape": [3], "type": "low_dim"}}}
        SequenceDataset(path, horizon=4, shape_meta=bad, zarr_keys={"image": "img", "agent_pos": "state[:2]"})
    with pytest.raises(ValueError,
                       match=r"image 'image' expects key 'img' of per-step shape \(H, W, C\) = \(96, 96, 3\)"):
        bad = {**SHAPE_META, "obs": {**SHAPE_META["obs"], "image": {"shape": [3, 96, 96], "type": "rgb"}}}
        SequenceDataset(path, horizon=4, shape_meta=bad, zarr_keys={"image": "img", "agent_pos": "state[:2]"})
    with pytest.raises(ValueError, match="in-memory replay buffer: the replay buffer has no episodes"):
        SequenceDataset(ReplayBuffer.create_empty(), horizon=4, obs_keys=["state"])
    with pytest.raises(ValueError, match=r"pusht_like\.zarr: no training windows \(0 training episodes of 10"):
        SequenceDataset(path, horizon=4, obs_keys=["state"], max_train_episodes=0)
    with pytest.raises(ValueError, match="exactly one of obs_keys"):
        SequenceDataset(path, horizon=4)
