"""Observation and reward normalization, as gymnasium's NormalizeObservation/NormalizeReward and SB3's VecNormalize do it.

Observations: :class:`ObservationNormalizer`, a module of the policy, so that its running mean and variance
are module buffers. They are saved in checkpoints, moved with the policy to its device, copied to the
async actor, and exported inside the policy's graph. Only the training code changes them
(:meth:`ObservationNormalizer.accumulate` then :meth:`ObservationNormalizer.sync`, which combines the
moments of every DDP rank), so evaluation, test, predict and export use the training statistics, frozen.

Rewards: :class:`RewardNormalizer`, in the collector: each reward is divided by the running standard
deviation of the discounted return of its sub-env (reset at the end of each episode) and clipped. Its
state is per process (DDP ranks keep their own) and is saved in checkpoints with the collector's.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Union

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

#: Added to the variance before the square root, as in gymnasium and SB3.
EPSILON = 1e-8
#: The statistics' initial count: the initial mean 0 and variance 1 weigh as much as 1e-4 samples (gymnasium, SB3).
INITIAL_COUNT = 1e-4

Observation = Union[Tensor, Mapping[str, Tensor]]


def merge_moments(mean: Any, var: Any, count: Any, batch_mean: Any, batch_var: Any, batch_count: Any) -> tuple[Any, Any, Any]:
    """Mean, variance and count of two sets of samples from theirs (Chan et al.'s parallel algorithm).

    Works on numpy arrays and torch tensors alike; variances are population variances.
    """
    delta = batch_mean - mean
    total = count + batch_count
    new_mean = mean + delta * (batch_count / total)
    m2 = var * count + batch_var * batch_count + delta * delta * (count * batch_count / total)
    return new_mean, m2 / total, total


def is_normalized(space: spaces.Space) -> bool:
    """Whether observations of ``space`` are normalized: float Box parts; uint8 images, bool Boxes (action masks) and other spaces are not."""
    return isinstance(space, spaces.Box) and space.dtype not in (np.uint8, np.bool_)


class RunningMeanStd(nn.Module):
    """Running mean and variance of a vector observation, in float64 buffers, and the normalization they give.

    ``mean``, ``var`` and ``count`` are buffers (checkpoints). The float32 ``shift`` and ``scale`` that
    :meth:`forward` applies are derived from them after every change, so normalizing costs one fused
    multiply-add and a clamp per batch; they are buffers too, so that a copy of the state (the async
    actor's, a checkpoint's) carries them.

    Args:
        shape: The observation's shape.
        clip: Normalized observations are clipped to ``[-clip, clip]``.
    """

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0):
        super().__init__()
        self.clip = float(clip)
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(INITIAL_COUNT, dtype=torch.float64))
        self.register_buffer("shift", torch.zeros(shape))
        self.register_buffer("scale", torch.ones(shape))
        self.refresh()
        # Samples gathered by accumulate() since the last sync(), as deviations from `mean` (which only sync() moves):
        # plain attributes, not buffers, since they differ across DDP ranks (DDP broadcasts rank 0's buffers).
        self.pending: Tensor | None = None

    def refresh(self) -> None:
        """Recompute ``shift`` and ``scale`` from the statistics: ``(x - mean) / sqrt(var + eps) == x * scale + shift``."""
        with torch.no_grad():
            scale = (self.var + EPSILON).rsqrt()
            self.scale.copy_(scale)
            self.shift.copy_(-self.mean * scale)

    def forward(self, obs: Tensor) -> Tensor:
        """``clip((obs - mean) / sqrt(var + 1e-8), -clip, clip)``, in float32."""
        return torch.addcmul(self.shift, obs, self.scale).clamp_(-self.clip, self.clip)

    def accumulate(self, obs: Tensor) -> None:
        """Add a batch ``[B, *shape]`` to the samples of the next :meth:`sync` (local: no communication)."""
        x = obs.detach().reshape(-1, *self.mean.shape).to(torch.float64) - self.mean
        moments = torch.cat([x.new_tensor([x.shape[0]]), x.sum(0).flatten(), (x * x).sum(0).flatten()])
        self.pending = moments if self.pending is None else self.pending + moments

    def sync(self, moments: Tensor) -> None:
        """Merge summed moments (``[count, sum, sum of squares]`` of deviations from ``mean``) into the statistics."""
        n = moments[0]
        if n <= 0:
            return
        dim = self.mean.numel()
        s, ss = moments[1 : 1 + dim].view_as(self.mean), moments[1 + dim :].view_as(self.mean)
        batch_mean = s / n
        batch_var = (ss / n - batch_mean * batch_mean).clamp_(min=0.0)
        with torch.no_grad():
            mean, var, count = merge_moments(self.mean, self.var, self.count, self.mean + batch_mean, batch_var, n)
            self.mean.copy_(mean)
            self.var.copy_(var)
            self.count.copy_(count)
        self.refresh()

    def take_pending(self) -> Tensor:
        """The moments gathered since the last sync (zeros if none), and forget them."""
        pending = self.pending if self.pending is not None else self.mean.new_zeros(1 + 2 * self.mean.numel())
        self.pending = None
        return pending


class ObservationNormalizer(nn.Module):
    """The policy's observation normalization: a :class:`RunningMeanStd` per normalized part of the observation.

    A Box observation has one part, ``"obs"``; a Dict observation one per float Box key (image and Discrete
    parts pass through unchanged). :meth:`statistics` gives a part's statistics. They change only through
    :meth:`accumulate` and :meth:`sync`, which the algorithms call while training, so acting, evaluation and
    export use them frozen.

    Args:
        observation_space: The env's single observation space (Box, or Dict of spaces).
        clip: Normalized observations are clipped to ``[-clip, clip]``.

    Example::

        >>> normalizer = ObservationNormalizer(spaces.Box(-10, 10, (2,)))
        >>> normalizer.accumulate(torch.tensor([[1.0, 0.0], [3.0, 2.0]]))
        >>> normalizer.sync()
        >>> normalizer(torch.tensor([[2.0, 1.0], [3.0, 0.0]])).round(decimals=2)
        tensor([[ 0.,  0.],
                [ 1., -1.]])
    """

    def __init__(self, observation_space: spaces.Space, clip: float = 10.0):
        super().__init__()
        self.is_dict = isinstance(observation_space, spaces.Dict)
        parts = observation_space.spaces if self.is_dict else {"obs": observation_space}
        keys = [key for key, space in parts.items() if is_normalized(space)]
        if not keys:
            raise ValueError(f"normalize_obs=True needs float Box observations (or Dict parts), got {observation_space}.")
        # A ModuleList in key order, not a ModuleDict: a Dict's keys may hold dots, which module names cannot.
        self.stats = nn.ModuleList([RunningMeanStd(parts[key].shape, clip) for key in keys])
        # The same modules with their keys, as a plain tuple (not registered twice): forward() runs on every env step.
        self.parts: tuple[tuple[str, RunningMeanStd], ...] = tuple(zip(keys, self.stats))
        self.register_load_state_dict_pre_hook(rename_keyed_statistics)

    def statistics(self, key: str = "obs") -> RunningMeanStd:
        """The running statistics of the Dict key ``key`` (``"obs"`` for a Box observation)."""
        return dict(self.parts)[key]

    def forward(self, obs: Observation) -> Observation:
        """Normalized observations (a tensor, or a dict with its normalized parts replaced)."""
        if not self.is_dict:
            return self.parts[0][1].forward(obs)
        obs = dict(obs)
        for key, stats in self.parts:
            obs[key] = stats.forward(obs[key])
        return obs

    def accumulate(self, obs: Observation) -> None:
        """Add a batch of raw observations to the samples of the next :meth:`sync` (this process only)."""
        for key, stats in self.parts:
            stats.accumulate(obs[key] if self.is_dict else obs)

    def sync(self, all_reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        """Merge the samples of every process into the statistics, identically on every DDP rank.

        Args:
            all_reduce: Sums a tensor over the DDP ranks (e.g. ``lambda t: trainer.strategy.reduce(t, reduce_op="sum")``);
                None in a single process. All ranks must call it together.
        """
        pending = [stats.take_pending() for stats in self.stats]
        sizes = [p.numel() for p in pending]
        moments = torch.cat(pending)
        if all_reduce is not None:
            moments = all_reduce(moments)
        for stats, part in zip(self.stats, moments.split(sizes)):
            stats.sync(part)


def rename_keyed_statistics(module: ObservationNormalizer, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load checkpoints written when the statistics were keyed by name (``stats.<key>.mean``) as ``stats.<index>.mean``."""
    for index, (key, _) in enumerate(module.parts):
        old, new = f"{prefix}stats.{key}.", f"{prefix}stats.{index}."
        for name in [name for name in state_dict if name.startswith(old)] if old != new else []:
            state_dict[new + name[len(old):]] = state_dict.pop(name)


class RewardNormalizer:
    """Scales rewards by the running standard deviation of each sub-env's discounted return, then clips them.

    As SB3's VecNormalize: ``ret = ret * gamma + reward`` per sub-env, the running variance of ``ret``
    is updated with the batch, the reward is divided by ``sqrt(var + 1e-8)`` and clipped, and ``ret``
    restarts at 0 when an episode ends (terminated or truncated).

    Args:
        num_envs: Sub-envs of the vector env.
        gamma: The algorithm's discount factor.
        clip: Normalized rewards are clipped to ``[-clip, clip]``.
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0):
        self.gamma, self.clip = gamma, float(clip)
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.mean, self.var, self.count = 0.0, 1.0, INITIAL_COUNT

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """Normalized float32 rewards of one vector step; ``dones`` marks the sub-envs whose episode ended in it."""
        self.returns = self.returns * self.gamma + rewards
        self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count, self.returns.mean(), self.returns.var(), len(self.returns))
        normalized = np.clip(rewards / np.sqrt(self.var + EPSILON), -self.clip, self.clip).astype(np.float32)
        self.returns[dones] = 0.0
        return normalized

    def state_dict(self) -> dict[str, Any]:
        """The statistics and the discounted returns in progress (tensors and floats, for ``weights_only`` loading)."""
        return {"returns": torch.from_numpy(self.returns.copy()), "mean": float(self.mean), "var": float(self.var), "count": float(self.count)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.returns = state["returns"].numpy().astype(np.float64)
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]


def setup_normalization(module: Any) -> None:
    """``module.setup_normalization()``: give ``module.policy`` its observation normalizer with ``normalize_obs``.

    An algorithm calls it once its policy is built (in ``__init__``), so that the statistics are in the state_dict.
    """
    if module.hparams.normalize_obs:
        module.policy.normalize_observations(module.hparams.clip_obs)


def sync_obs_statistics(module: Any) -> None:
    """Merge the observations every rank accumulated into the policy's statistics.

    A collective with DDP: every rank calls it at the same point (all ranks run the same number of batches),
    and every rank ends with the same statistics.
    """
    normalizer = module.policy.obs_normalizer
    if normalizer is None:
        return
    reduce = (lambda t: module.trainer.strategy.reduce(t, reduce_op="sum")) if module.world_size > 1 else None
    normalizer.sync(reduce)
