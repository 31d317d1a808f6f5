import json
import zipfile

import numpy as np
import pytest
import zarr

from drifting_policy.data import ReplayBuffer


def make_buffer(lengths=(3, 5, 2), seed=0):
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer.create_empty()
    for length in lengths:
        buffer.add_episode({
            "action": rng.normal(size=(length, 2)).astype(np.float32),
            "img": rng.integers(0, 255, size=(length, 8, 8, 3), dtype=np.uint8),
            "state": rng.normal(size=(length, 5)),
        })
    return buffer


def test_sizes_and_episodes():
    buffer = make_buffer((3, 5, 2))
    assert buffer.n_episodes == 3 and buffer.n_steps == 10
    np.testing.assert_array_equal(buffer.episode_ends, [3, 8, 10])
    assert buffer.episode_ends.dtype == np.int64
    np.testing.assert_array_equal(buffer.episode_lengths, [3, 5, 2])
    assert buffer.episode_slice(1) == slice(3, 8)
    assert buffer.episode_slice(-1) == slice(8, 10)
    assert sorted(buffer.keys()) == ["action", "img", "state"]
    assert "img" in buffer and "missing" not in buffer
    assert buffer["state"].shape == (10, 5)
    episode = buffer.get_episode(1)
    np.testing.assert_array_equal(episode["action"], buffer["action"][3:8])
    with pytest.raises(IndexError, match="episode 3 out of range"):
        buffer.episode_slice(3)


def test_many_appends_keep_every_frame():
    buffer = ReplayBuffer.create_empty()
    for i in range(200):
        buffer.add_episode({"x": np.full((i % 7 + 1, 1), i)})
    expected = np.concatenate([np.full((i % 7 + 1, 1), i) for i in range(200)])
    np.testing.assert_array_equal(buffer["x"], expected)


@pytest.mark.parametrize("name", ["buffer.zarr", "buffer.zarr.zip"])
def test_save_load_round_trip(tmp_path, name):
    buffer = make_buffer()
    path = buffer.save_to_path(tmp_path / name, chunk_length=4)
    loaded = ReplayBuffer.copy_from_path(path)
    np.testing.assert_array_equal(loaded.episode_ends, buffer.episode_ends)
    for key in buffer.keys():  # noqa: SIM118  (a ReplayBuffer is not iterable)
        assert loaded[key].dtype == buffer[key].dtype
        np.testing.assert_array_equal(loaded[key], buffer[key])
    only_action = ReplayBuffer.copy_from_path(path, keys=["action"])
    assert only_action.keys() == ["action"]
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left behind


def test_overwrite_existing_directory(tmp_path):
    make_buffer((2,)).save_to_path(tmp_path / "b.zarr")
    make_buffer((4, 4)).save_to_path(tmp_path / "b.zarr")
    assert ReplayBuffer.copy_from_path(tmp_path / "b.zarr").n_steps == 8
    assert [p.name for p in tmp_path.iterdir()] == ["b.zarr"]


def test_written_store_is_zarr_format_2(tmp_path):
    path = make_buffer().save_to_path(tmp_path / "b.zarr", chunk_length=4)
    assert json.loads((path / ".zgroup").read_text())["zarr_format"] == 2
    assert json.loads((path / "data" / ".zgroup").read_text())["zarr_format"] == 2
    zarray = json.loads((path / "data" / "img" / ".zarray").read_text())
    assert zarray["zarr_format"] == 2 and zarray["chunks"] == [4, 8, 8, 3] and zarray["dtype"] == "|u1"
    ends = json.loads((path / "meta" / "episode_ends" / ".zarray").read_text())
    assert ends["dtype"] == "<i8" and ends["shape"] == [3]
    assert not (path / "zarr.json").exists()

    zip_path = make_buffer().save_to_path(tmp_path / "b.zarr.zip")
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert json.loads(archive.read("data/action/.zarray"))["zarr_format"] == 2
    assert "meta/episode_ends/.zarray" in names and "zarr.json" not in names
    assert zarr.open_group(str(path), mode="r").metadata.zarr_format == 2


def test_unknown_key_names_file_and_available_keys(tmp_path):
    path = make_buffer().save_to_path(tmp_path / "b.zarr")
    with pytest.raises(ValueError, match=r"b\.zarr.*'keypoint'.*available keys: \['action', 'img', 'state'\]"):
        ReplayBuffer.copy_from_path(path, keys=["action", "keypoint"])
    with pytest.raises(FileNotFoundError, match="nowhere.zarr"):
        ReplayBuffer.copy_from_path(tmp_path / "nowhere.zarr")


def test_add_episode_rejects_bad_input():
    buffer = make_buffer((2,))
    with pytest.raises(ValueError, match="same length"):
        buffer.add_episode({"action": np.zeros((3, 2)), "img": np.zeros((2, 8, 8, 3)), "state": np.zeros((3, 5))})
    with pytest.raises(ValueError, match="0 steps"):
        ReplayBuffer.create_empty().add_episode({"x": np.zeros((0, 2))})
    with pytest.raises(ValueError, match=r"'state' has per-step shape \(4,\).*holds \(5,\)"):
        buffer.add_episode({"action": np.zeros((2, 2), np.float32), "img": np.zeros((2, 8, 8, 3), np.uint8),
                            "state": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="dtype float64.*float32"):
        buffer.add_episode({"action": np.zeros((2, 2)), "img": np.zeros((2, 8, 8, 3), np.uint8),
                            "state": np.zeros((2, 5))})
    with pytest.raises(ValueError, match="differ from the buffer's keys"):
        buffer.add_episode({"action": np.zeros((2, 2), np.float32)})
    assert buffer.n_episodes == 1  # failed appends changed nothing
    with pytest.raises(ValueError, match="empty replay buffer"):
        ReplayBuffer.create_empty().save_to_path("/tmp/never.zarr")
