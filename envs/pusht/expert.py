"""A scripted PushT expert with privileged state: geometric push planning plus pure-pursuit execution.

Planning. The block moves only while it is pushed (gym-pusht's space has zero damping and frictionless shapes), so a
push by the round agent at a point of the T's outline moves the block quasi-statically along the contact normal:
per unit of agent travel along the normal n at lever arm r from the centre of gravity, the centre moves by
n / (m k) and the angle by (r x n) / (I k), with k = 1/m + (r x n)^2 / I. ``simulate_pushes`` integrates this
along straight pushes, re-finding the contact as the block turns. For every candidate contact (points along the
outline's edges and fanned normals at its convex corners) the planner finds the push length that most reduces the
pose error

    E = |com - com_goal|^2 + 2 rho^2 (1 - cos(angle - angle_goal))

(the mean squared displacement of the T's points between the two poses, rho^2 their mean squared distance from
the centre of gravity), and rates it by that reduction per env step, counting the trip to the contact. The trip is
straight when the segment clears the T, otherwise a detour along a circle around the block.

Multimodality. The options are distinct plans: a face of the T (its best contact) times a way to get there
(straight, or around the block either way). Options whose rate is within ``tolerance`` of the best are equally
good, and the expert picks one of them uniformly with its own seeded generator, so runs from the same state go
different ways (``envs.pusht.stats.expert_divergence``).

Execution. The agent follows the planned polyline (trip, approach along the normal, push) by aiming a carrot a
fixed look-ahead ahead of its projection onto the path; gym-pusht's PD controller (critically damped, 0.1 s time
constant) tracks it. The expert re-plans when the push ends or when the block moved during the trip.
"""

from __future__ import annotations

import numpy as np

from envs.pusht.env import GOAL_POSE, T_BAR, T_CENTER_OF_GRAVITY, T_STEM, pose_transform

AGENT_RADIUS = 15.0
BLOCK_MASS = 1.0
BLOCK_MOMENT = 3000.0  # gym-pusht's body moment about the centre of gravity
# T outline in the body frame, walking around the union of bar and stem.
T_OUTLINE = np.array(
    [[-60.0, 0.0], [60.0, 0.0], [60.0, 30.0], [15.0, 30.0], [15.0, 120.0], [-15.0, 120.0], [-15.0, 30.0], [-60.0, 30.0]]
)
T_RECTS = np.array([[*part.min(0), *part.max(0)] for part in (T_BAR, T_STEM)])  # x0, y0, x1, y1
RHO2 = 1950.0  # mean squared distance of the T's area from its centre of gravity
ORBIT_RADIUS = 77.0 + AGENT_RADIUS + 6.0  # farthest T point from the centre of gravity, plus the agent, plus margin
ARENA = (20.0, 492.0)  # agent centre range that keeps it off the walls


def distance_to_t(points_local: np.ndarray) -> np.ndarray:
    """Distance from body-frame points (..., 2) to the T (0 inside)."""
    p = points_local[..., None, :]
    lo, hi = T_RECTS[:, :2], T_RECTS[:, 2:]
    gap = np.maximum(np.maximum(lo - p, p - hi), 0.0)
    return np.linalg.norm(gap, axis=-1).min(axis=-1)


def pose_error(com: np.ndarray, angle: np.ndarray, goal_com: np.ndarray, goal_angle: float) -> np.ndarray:
    return ((com - goal_com) ** 2).sum(-1) + 2.0 * RHO2 * (1.0 - np.cos(angle - goal_angle))


def _outward_normal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    e = (b - a) / np.linalg.norm(b - a)
    n = np.array([e[1], -e[0]])
    return n if distance_to_t((a + b) / 2 + n) > 0 else -n


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    """The z component of the cross product of two 2-D vectors (np.cross deprecated 2-D inputs)."""
    return a[0] * b[1] - a[1] * b[0]


def _contact_candidates(spacing: float = 6.0, corner_fan: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body-frame contact points, outward normals and face ids: along each edge (face = edge index), and fanned
    at convex corners (face = number of edges + corner index)."""
    points, normals, faces = [], [], []
    n_vertices = len(T_OUTLINE)
    edge_normals = []
    for i in range(n_vertices):
        a, b = T_OUTLINE[i], T_OUTLINE[(i + 1) % n_vertices]
        n = _outward_normal(a, b)
        edge_normals.append(n)
        length = np.linalg.norm(b - a)
        for t in np.arange(spacing / 2, length, spacing):
            points.append(a + (b - a) * t / length)
            normals.append(n)
            faces.append(i)
    for i in range(n_vertices):
        n_prev, n_next = edge_normals[i - 1], edge_normals[i]
        if _cross(n_prev, n_next) * _cross(edge_normals[0], edge_normals[1]) < 0:
            continue  # concave corner: the agent cannot touch it alone
        for w in np.linspace(0, 1, corner_fan + 2)[1:-1]:
            n = (1 - w) * n_prev + w * n_next
            points.append(T_OUTLINE[i])
            normals.append(n / np.linalg.norm(n))
            faces.append(n_vertices + i)
    return np.array(points), np.array(normals), np.array(faces)


class PushTExpert:
    """Scripted expert: ``act(state)`` maps the 5-D state (agent x, y, block x, y, angle) to a target position.

    Call ``reset(seed)`` at the start of each episode; the seed drives the random choice among near-equal plans.
    """

    def __init__(
        self,
        seed: int = 0,
        tolerance: float = 0.25,
        gap: float = 2.0,
        max_push: float = 80.0,
        travel_lookahead: float = 60.0,
        push_lookahead: float = 20.0,
        done_radius: float = 3.0,
    ):
        self.tolerance = tolerance
        self.gap = gap
        self.max_push = max_push
        self.travel_lookahead = travel_lookahead
        self.push_lookahead = push_lookahead
        self.done_radius = done_radius
        self.goal_com = pose_transform(GOAL_POSE, T_CENTER_OF_GRAVITY)
        contacts, normals, faces = _contact_candidates()
        pre_contacts = contacts + normals * (AGENT_RADIUS + gap)
        reachable = distance_to_t(pre_contacts) > AGENT_RADIUS + gap - 0.5
        self.normals, self.pre_contacts, self.faces = normals[reachable], pre_contacts[reachable], faces[reachable]
        # Travel lengths from the pre-contact point the planner considers: fine near contact, coarser further.
        fine = np.arange(0.25, 6.0, 0.25)
        self.push_lengths = gap + np.concatenate([fine, np.arange(6.0, max_push - gap + 1e-6, 3.0)])
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.path: np.ndarray | None = None  # polyline: trip to the pre-contact point, then the push
        self.cum = np.zeros(1)  # arc length at each path vertex
        self.push_from = 0.0  # arc length where the push begins
        self.push_length = 0.0
        self.progress = 0.0  # arc length the agent has reached
        self.planned_block = None

    # ---------------------------------------------------------------- planning
    def _trip(self, agent: np.ndarray, target: np.ndarray, com: np.ndarray, block_pose: np.ndarray) -> list[list]:
        """Candidate trips (list of waypoints) from the agent to ``target``: straight if clear, else both orbits."""
        n = max(int(np.linalg.norm(target - agent) / 4.0), 2)
        samples = agent + (target - agent) * np.linspace(0, 1, n)[:, None]
        local = (samples - block_pose[:2]) @ _rotation(block_pose[2])
        if distance_to_t(local).min() > AGENT_RADIUS + 3.0:
            return [[agent, target]]
        a0 = np.arctan2(*(agent - com)[::-1])
        a1 = np.arctan2(*(target - com)[::-1])
        trips = []
        for direction in (1.0, -1.0):
            sweep = (direction * (a1 - a0)) % (2 * np.pi)
            angles = a0 + direction * np.linspace(0, sweep, max(int(sweep / 0.25), 1) + 1)
            arc = com + ORBIT_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=1)
            arc = np.clip(arc, *ARENA)
            trips.append([agent, *arc, target])
        return trips

    def plan(self, state: np.ndarray) -> None:
        agent, block_pose = state[:2], state[2:5]
        com = pose_transform(block_pose, T_CENTER_OF_GRAVITY)
        error = pose_error(com, block_pose[2], self.goal_com, GOAL_POSE[2])
        rot = _rotation(block_pose[2])
        pre = pose_transform(block_pose, self.pre_contacts)
        push_dir = -(self.normals @ rot.T)
        new_error = simulate_pushes(block_pose, pre, push_dir, self.push_lengths)
        new_error = pose_error(*new_error, self.goal_com, GOAL_POSE[2])
        best = np.argmin(new_error, axis=1)
        gain = error - new_error[np.arange(len(best)), best]
        push = self.push_lengths[best]
        in_arena = ((pre > ARENA[0]) & (pre < ARENA[1])).all(axis=1)
        travel = np.linalg.norm(pre - agent, axis=1)
        steps = travel / (0.5 * self.travel_lookahead) + push / (0.5 * self.push_lookahead) + 6.0
        rate = np.where(in_arena & (gain > 0), gain / steps, -np.inf)
        # A crude straight-line travel estimate picks the best contact of each face; those get real trips.
        shortlist = [np.flatnonzero(self.faces == f)[np.argmax(rate[self.faces == f])] for f in np.unique(self.faces)]
        shortlist = [i for i in shortlist if np.isfinite(rate[i])]
        if not shortlist:
            self.path = None
            return
        options = []
        for i in shortlist:
            for trip in self._trip(agent, pre[i], com, block_pose):
                length = np.linalg.norm(np.diff(np.array(trip), axis=0), axis=1).sum()
                steps_i = length / (0.5 * self.travel_lookahead) + push[i] / (0.5 * self.push_lookahead) + 6
                options.append((gain[i] / steps_i, i, trip))
        # Distinct options (face x way around) that are nearly as good as the best are equally likely.
        best_rate = max(o[0] for o in options)
        good = [o for o in options if o[0] >= (1.0 - self.tolerance) * best_rate]
        _, i, trip = good[self.rng.integers(len(good))]
        end = pre[i] + push_dir[i] * push[i]
        self.push_length = push[i]
        self.path = np.array([*trip, end])
        self.cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(self.path, axis=0), axis=1))])
        self.push_from = self.cum[-2]
        self.progress = 0.0
        self.planned_block = block_pose.copy()

    # --------------------------------------------------------------- execution
    def act(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64)
        if self.path is None or self._block_moved(state) or self._push_done(state):
            self.plan(state)
            if self.path is None:
                return state[:2].copy()
        window = 2 * self.travel_lookahead
        self.progress = max(self.progress, _project(self.path, self.cum, state[:2], self.progress, window))
        if self._pushing():
            carrot = min(self.progress + self.push_lookahead, self.cum[-1])
        else:  # arrive at the contact before pushing
            carrot = min(self.progress + self.travel_lookahead, self.push_from)
        return _point_at(self.path, self.cum, carrot)

    def _pushing(self) -> bool:
        return self.progress >= self.push_from - 1.0

    def _block_moved(self, state: np.ndarray) -> bool:
        """The block moved during the trip (the agent brushed it): the plan is stale."""
        turn = (state[4] - self.planned_block[2] + np.pi) % (2 * np.pi) - np.pi
        moved = np.linalg.norm(state[2:4] - self.planned_block[:2]) > 2.0 or abs(turn) > 0.03
        return moved and not self._pushing()

    def _push_done(self, state: np.ndarray) -> bool:
        # Short pushes need the agent close to the end, or it would stop before touching the block.
        radius = min(self.done_radius, max(0.3, 0.2 * (self.push_length - self.gap)))
        return np.linalg.norm(state[:2] - self.path[-1]) < radius


def simulate_pushes(
    block_pose: np.ndarray, starts: np.ndarray, directions: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Quasi-static rollouts of K straight pushes: the agent moves from ``starts`` (K, 2) along ``directions``
    through the increasing travel ``lengths`` (L,); whenever it overlaps the T, the block gets the frictionless
    point-push response that removes the overlap. Returns the centre of gravity (K, L, 2) and angle (K, L) at each
    length."""
    k, n_steps = len(starts), len(lengths)
    angle = np.full(k, float(block_pose[2]))
    com = np.tile(pose_transform(block_pose, T_CENTER_OF_GRAVITY), (k, 1))
    coms, angles = np.empty((k, n_steps, 2)), np.empty((k, n_steps))
    lo, hi = T_RECTS[:, :2], T_RECTS[:, 2:]
    for j in range(n_steps):
        agent = starts + directions * lengths[j]
        c, s = np.cos(angle), np.sin(angle)
        rel = agent - com
        local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]], 1) + T_CENTER_OF_GRAVITY
        nearest = np.clip(local[:, None, :], lo, hi)  # (K, 2 rects, 2)
        dist = np.linalg.norm(local[:, None, :] - nearest, axis=-1)
        which = np.argmin(dist, axis=1)
        contact = nearest[np.arange(k), which]
        dist = dist[np.arange(k), which]
        depth = np.where(dist > 1e-6, np.maximum(AGENT_RADIUS - dist, 0.0), 0.0)
        push = (contact - local) / np.maximum(dist, 1e-6)[:, None]  # into the block, body frame
        lever = contact - T_CENTER_OF_GRAVITY
        cross = lever[:, 0] * push[:, 1] - lever[:, 1] * push[:, 0]
        inv_k = depth / (1.0 / BLOCK_MASS + cross**2 / BLOCK_MOMENT)
        dcom = push * (inv_k / BLOCK_MASS)[:, None]
        com = com + np.stack([c * dcom[:, 0] - s * dcom[:, 1], s * dcom[:, 0] + c * dcom[:, 1]], 1)
        angle = angle + cross * inv_k / BLOCK_MOMENT
        coms[:, j], angles[:, j] = com, angle
    return coms, angles


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _project(path: np.ndarray, cum: np.ndarray, point: np.ndarray, s_from: float, window: float) -> float:
    """Arc length of the path point closest to ``point`` among the path between ``s_from`` and ``s_from + window``
    (a window, so that a path passing near itself does not make the agent skip ahead)."""
    a, b = path[:-1], path[1:]
    ab = b - a
    t = np.clip(((point - a) * ab).sum(1) / np.maximum((ab**2).sum(1), 1e-9), 0.0, 1.0)
    dist = np.linalg.norm(a + ab * t[:, None] - point, axis=1)
    dist[(cum[1:] < s_from) | (cum[:-1] > s_from + window)] = np.inf
    i = int(np.argmin(dist))
    return float(cum[i] + t[i] * np.linalg.norm(ab[i]))


def _point_at(path: np.ndarray, cum: np.ndarray, s: float) -> np.ndarray:
    i = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(path) - 2))
    seg = cum[i + 1] - cum[i]
    t = 0.0 if seg <= 0 else (s - cum[i]) / seg
    return path[i] + (path[i + 1] - path[i]) * min(max(t, 0.0), 1.0)
