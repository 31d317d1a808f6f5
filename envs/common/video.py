"""Per-episode video recording inside (possibly remote) vector env workers."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np


def write_video(path: str | Path, frames: list[np.ndarray], fps: int) -> Path:
    """Write (H, W, 3) uint8 frames as mp4 (libx264 through imageio-ffmpeg) or gif, chosen by the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        imageio.mimsave(path, frames, duration=1000.0 / fps, loop=0)
    elif path.suffix == ".mp4":
        with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=1) as writer:
            for frame in frames:
                writer.append_data(frame)
    else:
        raise ValueError(f"write_video: {path} must end in .mp4 or .gif")
    return path


class VideoRecorder(gym.Wrapper):
    """Records ``env.render()`` after reset and after every step of an episode while ``video_path`` is set
    (a vector env sets it per worker with ``set_attr("video_path", [...])`` before a reset); the file is written when
    the episode ends, and ``video_path`` is cleared so later episodes are not recorded."""

    def __init__(self, env: gym.Env, fps: int = 10):
        super().__init__(env)
        self.fps = fps
        self.video_path: str | None = None
        self._frames: list[np.ndarray] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._frames = []
        result = self.env.reset(seed=seed, options=options)
        if self.video_path is not None:
            self._frames.append(self.env.render())
        return result

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.video_path is not None:
            self._frames.append(self.env.render())
            if terminated or truncated:
                write_video(self.video_path, self._frames, self.fps)
                self.video_path, self._frames = None, []
        return obs, reward, terminated, truncated, info

    def flush(self) -> None:
        """Write the recording of an episode stopped before it ended (by a step limit of the caller's, say)."""
        if self.video_path is not None and self._frames:
            write_video(self.video_path, self._frames, self.fps)
        self.video_path, self._frames = None, []
