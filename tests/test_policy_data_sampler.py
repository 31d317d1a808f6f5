import numpy as np
import pytest

from drifting_policy.data import ReplayBuffer, SequenceSampler, downsample_mask, get_val_mask


def counting_buffer(lengths):
    """Frame values 0, 1, 2, ... so a window shows exactly which frames it holds."""
    buffer = ReplayBuffer.create_empty()
    start = 0
    for length in lengths:
        frames = np.arange(start, start + length)
        buffer.add_episode({"t": frames.astype(np.int64), "x": np.stack([frames, -frames], 1).astype(np.float32)})
        start += length
    return buffer


def windows(sampler, key="t"):
    return [sampler.sample_sequence(i)[key].tolist() for i in range(len(sampler))]


def test_padding_repeats_first_and_last_frames():
    sampler = SequenceSampler(counting_buffer([3, 5]), sequence_length=4, pad_before=1, pad_after=2)
    assert windows(sampler) == [
        # episode 0: frames 0..2, starts -1..1
        [0, 0, 1, 2], [0, 1, 2, 2], [1, 2, 2, 2],
        # episode 1: frames 3..7, starts -1..3; never mixes with episode 0
        [3, 3, 4, 5], [3, 4, 5, 6], [4, 5, 6, 7], [5, 6, 7, 7], [6, 7, 7, 7],
    ]
    np.testing.assert_array_equal(sampler.sample_sequence(0)["x"], [[0, 0], [0, 0], [1, -1], [2, -2]])


@pytest.mark.parametrize("sequence_length,pad_before,pad_after",
                         [(1, 0, 0), (3, 0, 0), (4, 3, 3), (5, 9, 9), (16, 1, 7)])
def test_windows_match_clipped_frame_indices(sequence_length, pad_before, pad_after):
    lengths = [1, 2, 7, 20]
    sampler = SequenceSampler(counting_buffer(lengths), sequence_length, pad_before, pad_after)
    expected, start = [], 0
    before, after = min(pad_before, sequence_length - 1), min(pad_after, sequence_length - 1)
    for length in lengths:
        for s in range(-before, length - sequence_length + after + 1):
            expected.append((start + np.clip(np.arange(s, s + sequence_length), 0, length - 1)).tolist())
        start += length
    assert windows(sampler) == expected


def test_episode_mask_selects_episodes():
    sampler = SequenceSampler(counting_buffer([3, 4, 2]), 2, episode_mask=np.array([False, True, False]))
    assert windows(sampler) == [[3, 4], [4, 5], [5, 6]]
    assert len(SequenceSampler(counting_buffer([3]), 2, episode_mask=np.array([False]))) == 0
    with pytest.raises(ValueError, match=r"episode_mask has shape \(2,\), expected \(3,\)"):
        SequenceSampler(counting_buffer([3, 4, 2]), 2, episode_mask=np.array([True, False]))


def test_key_first_k_reads_only_the_first_frames():
    sampler = SequenceSampler(counting_buffer([6]), sequence_length=5, pad_before=2, key_first_k={"x": 3})
    sample = sampler.sample_sequence(0)  # window start -2: frames 0, 0, 0, 1, 2
    assert sample["t"].tolist() == [0, 0, 0, 1, 2]
    np.testing.assert_array_equal(sample["x"][:3, 0], [0, 0, 0])
    assert np.isnan(sample["x"][3:]).all()
    last = sampler.sample_sequence(len(sampler) - 1)  # start 1: frames 1..5
    np.testing.assert_array_equal(last["x"][:3, 0], [1, 2, 3])


def test_val_mask_counts_and_determinism():
    mask = get_val_mask(206, 0.02, seed=42)
    assert mask.sum() == 4 and mask.dtype == bool
    np.testing.assert_array_equal(mask, get_val_mask(206, 0.02, seed=42))
    assert not np.array_equal(mask, get_val_mask(206, 0.02, seed=0))
    assert get_val_mask(10, 0.02).sum() == 1  # at least one validation episode
    assert get_val_mask(2, 0.9).sum() == 1  # at least one training episode
    assert get_val_mask(1, 0.5).sum() == 0
    assert get_val_mask(10, 0.0).sum() == 0


def test_downsample_mask_keeps_a_deterministic_subset():
    mask = ~get_val_mask(206, 0.02, seed=42)
    small = downsample_mask(mask, 90, seed=42)
    assert small.sum() == 90 and not (small & ~mask).any()
    np.testing.assert_array_equal(small, downsample_mask(mask, 90, seed=42))
    np.testing.assert_array_equal(downsample_mask(mask, None), mask)
    np.testing.assert_array_equal(downsample_mask(mask, 500), mask)
