"""Sample queue of recent real samples (paper A.8), like MoCo's queue.

Per class a ring of the ``per_class`` most recent samples (the positives), plus one global ring of the
``global_size`` most recent samples of any class (the unconditional negatives for CFG). Sampling is without
replacement within a draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class SampleQueue:
    def __init__(
        self,
        num_classes: int,
        sample_shape: Sequence[int],
        per_class: int = 128,
        global_size: int = 1000,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ):
        self.num_classes, self.sample_shape = num_classes, tuple(sample_shape)
        self.per_class, self.global_size = per_class, global_size
        self.class_rings = torch.zeros(num_classes, per_class, *self.sample_shape, dtype=dtype, device=device)
        self.class_counts = torch.zeros(num_classes, dtype=torch.long)  # total pushed per class
        self.global_ring = torch.zeros(global_size, *self.sample_shape, dtype=dtype, device=device)
        self.global_count = 0

    def push(self, samples: torch.Tensor, labels: torch.Tensor) -> None:
        """Add samples [N, *sample_shape] with labels [N]; the oldest entries of each ring are overwritten."""
        if tuple(samples.shape[1:]) != self.sample_shape or labels.shape != samples.shape[:1]:
            raise ValueError(
                f"push expects samples [N, {', '.join(map(str, self.sample_shape))}] and labels [N]; "
                f"got {tuple(samples.shape)} and {tuple(labels.shape)}"
            )
        labels = labels.long().cpu()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}); got range [{labels.min()}, {labels.max()}]")
        samples = samples.to(self.class_rings)
        for i, label in enumerate(labels.tolist()):
            self.class_rings[label, self.class_counts[label] % self.per_class] = samples[i]
            self.class_counts[label] += 1
        slots = (self.global_count + torch.arange(len(labels))) % self.global_size
        self.global_ring[slots] = samples
        self.global_count += len(labels)

    def count(self, label: int) -> int:
        """How many samples of this class are available."""
        return int(min(self.class_counts[label], self.per_class))

    def sample_class(self, labels: torch.Tensor | Sequence[int], n: int, generator: torch.Generator | None = None):
        """[len(labels), n, *sample_shape]: n distinct queued samples of each label."""
        rows = []
        for label in torch.as_tensor(labels).tolist():
            available = self.count(label)
            if available < n:
                raise ValueError(f"class {label} has {available} queued samples, fewer than the {n} asked for")
            rows.append(self.class_rings[label, torch.randperm(available, generator=generator)[:n]])
        return torch.stack(rows)

    def sample_global(self, n_rows: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n_rows, n, *sample_shape]: per row, n distinct samples from the global ring."""
        available = min(self.global_count, self.global_size)
        if available < n:
            raise ValueError(f"the global queue has {available} samples, fewer than the {n} asked for")
        index = torch.stack([torch.randperm(available, generator=generator)[:n] for _ in range(n_rows)])
        return self.global_ring[index]

    def state_dict(self) -> dict:
        return {
            "class_rings": self.class_rings, "class_counts": self.class_counts,
            "global_ring": self.global_ring, "global_count": self.global_count,
        }

    def load_state_dict(self, state: dict) -> None:
        self.class_rings.copy_(state["class_rings"])
        self.class_counts.copy_(state["class_counts"])
        self.global_ring.copy_(state["global_ring"])
        self.global_count = int(state["global_count"])
