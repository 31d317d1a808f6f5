"""Rotation representations for absolute end-effector actions (robomimic ``*_abs`` datasets).

Diffusion Policy trains on absolute actions with the rotation as a 6-D vector: the first
two *rows* of the rotation matrix (pytorch3d's ``matrix_to_rotation_6d`` drops the last
row), mapped back to a matrix by Gram-Schmidt. A robot's raw absolute action is
``pos (3) + axis-angle (3) + gripper (1)`` per arm; the policy's is
``pos (3) + rot6d (6) + gripper (1)``.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

RAW_ARM_DIM = 7    # pos 3 + axis-angle 3 + gripper 1
ROT6D_ARM_DIM = 10  # pos 3 + rot6d 6 + gripper 1


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vectors (axis * angle) -> (..., 3, 3) matrices."""
    flat = np.asarray(axis_angle, dtype=np.float64).reshape(-1, 3)
    return Rotation.from_rotvec(flat).as_matrix().reshape(*np.shape(axis_angle)[:-1], 3, 3)


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) rotation vectors with angle in [0, pi]."""
    flat = np.asarray(matrix, dtype=np.float64).reshape(-1, 3, 3)
    return Rotation.from_matrix(flat).as_rotvec().reshape(*np.shape(matrix)[:-2], 3)


def matrix_to_rotation_6d(matrix: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 6): the first two rows, concatenated."""
    matrix = np.asarray(matrix)
    return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6)


def rotation_6d_to_matrix(rot6d: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt; any 6-D vector with independent halves works."""
    rot6d = np.asarray(rot6d, dtype=np.float64)
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-2)


def _n_arms(dim: int, per_arm: int, name: str) -> int:
    if dim == 0 or dim % per_arm != 0:
        raise ValueError(f"{name} actions have {per_arm} values per arm; got last dimension {dim}")
    return dim // per_arm


def axis_angle_action_to_rot6d(actions: np.ndarray) -> np.ndarray:
    """(..., 7 * arms) pos + axis-angle + gripper -> (..., 10 * arms) pos + rot6d + gripper."""
    actions = np.asarray(actions)
    arms = _n_arms(actions.shape[-1], RAW_ARM_DIM, "raw absolute (pos 3 + axis-angle 3 + gripper 1)")
    per_arm = actions.reshape(*actions.shape[:-1], arms, RAW_ARM_DIM)
    rot6d = matrix_to_rotation_6d(axis_angle_to_matrix(per_arm[..., 3:6]))
    out = np.concatenate([per_arm[..., :3], rot6d, per_arm[..., 6:]], axis=-1)
    return out.reshape(*actions.shape[:-1], arms * ROT6D_ARM_DIM).astype(actions.dtype, copy=False)


def rot6d_action_to_axis_angle(actions: np.ndarray) -> np.ndarray:
    """(..., 10 * arms) pos + rot6d + gripper -> (..., 7 * arms) pos + axis-angle + gripper."""
    actions = np.asarray(actions)
    arms = _n_arms(actions.shape[-1], ROT6D_ARM_DIM, "6-D rotation (pos 3 + rot6d 6 + gripper 1)")
    per_arm = actions.reshape(*actions.shape[:-1], arms, ROT6D_ARM_DIM)
    axis_angle = matrix_to_axis_angle(rotation_6d_to_matrix(per_arm[..., 3:9]))
    out = np.concatenate([per_arm[..., :3], axis_angle, per_arm[..., 9:]], axis=-1)
    return out.reshape(*actions.shape[:-1], arms * RAW_ARM_DIM).astype(actions.dtype, copy=False)
