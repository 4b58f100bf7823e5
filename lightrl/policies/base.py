"""The policy: the acting part of an algorithm, apart from the LightningModule that trains it.

Collectors, the async actor process, evaluation and export act only through a :class:`Policy`. It holds
the networks that acting needs (shared with the LightningModule, which trains them), and any exploration
state, explicitly, so that the whole object can be pickled to another process or exported on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from gymnasium import spaces
from torch import Tensor, nn

from lightrl.data.storage import leading_tensor
from lightrl.normalize import ObservationNormalizer


class Policy(nn.Module):
    """Observations in, actions in the env's space out: preprocessing, the networks, then the action.

    A subclass implements :meth:`act` (deterministic: the greedy action or the mode, for evaluation and
    export) and :meth:`explore` (the actions a collector takes while training). Both take a batch of
    observations as the collector holds them and run :meth:`preprocess` first. ``forward`` is :meth:`act`,
    so the module itself is the deterministic policy that :func:`lightrl.export` writes.

    Box actions from :meth:`act` are clipped into the action space's bounds; :meth:`explore` returns the
    actions as the algorithm stores them (PPO's unclipped Gaussian sample, whose log-probability it
    keeps), and the collector clips them for the env.

    Args:
        observation_space: The env's single observation space.
        action_space: The env's single action space.
    """

    #: Exploration state kept apart from the torch RNG (off-policy policies); None where exploration draws
    #: from the process's torch RNG (on-policy sampling, SAC's Gaussian).
    exploration: Exploration | None = None

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space):
        super().__init__()
        self.observation_space = observation_space
        self.action_space = action_space
        #: Compiled versions of the acting functions (``compile=True``), by name; never pickled.
        self.compiled: dict[str, Callable[..., Any]] = {}
        #: The observation normalization (``normalize_obs=True``, see :meth:`normalize_observations`); None: observations pass unchanged.
        self.obs_normalizer: ObservationNormalizer | None = None
        if isinstance(action_space, spaces.Box):
            # Not in the state_dict: constants of the env, which move with the module to its device.
            self.register_buffer("action_low", torch.as_tensor(action_space.low, dtype=torch.float32), persistent=False)
            self.register_buffer("action_high", torch.as_tensor(action_space.high, dtype=torch.float32), persistent=False)

    def preprocess(self, obs: Tensor) -> Tensor:
        """Observations as the networks take them: normalized with the frozen statistics of :attr:`obs_normalizer`, if any."""
        normalizer = self.obs_normalizer
        return obs if normalizer is None else normalizer.forward(obs)  # no hooks on it: skip Module.__call__ on every step

    def normalize_observations(self, clip: float = 10.0) -> None:
        """Normalize observations from now on, by running statistics kept in :attr:`obs_normalizer` (``normalize_obs=True``).

        The statistics are buffers of this module (checkpointed, exported); the algorithm updates them while training.
        """
        self.obs_normalizer = ObservationNormalizer(self.observation_space, clip)

    def act(self, obs: Tensor) -> Tensor:
        """Deterministic actions ``[B, ...]`` in the env's action space (override this)."""
        raise NotImplementedError

    def explore(self, obs: Tensor) -> Tensor:
        """Exploring actions ``[B, ...]``, as the collector takes and the algorithm stores them (override this)."""
        raise NotImplementedError

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> Tensor | None:
        """The state a recurrent policy carries between steps, at the start of ``batch_size`` episodes; None: no memory."""
        return None

    def forward(self, obs: Tensor) -> Tensor:
        """:meth:`act`: the deterministic policy, as export traces it."""
        return self.act(obs)

    def clip(self, actions: Tensor) -> Tensor:
        """Box actions clipped into the action space's bounds; other actions unchanged."""
        if not isinstance(self.action_space, spaces.Box):
            return actions
        return torch.minimum(torch.maximum(actions, self.action_low), self.action_high)

    def compile_acting(self, device: torch.device | str) -> None:
        """``torch.compile`` the acting functions into :attr:`compiled` (``compile=True``); nothing by default."""

    def __getstate__(self) -> dict[str, Any]:
        # Compiled functions do not pickle (the async actor gets the policy by pickling): the copy acts eagerly.
        return {**self.__dict__, "compiled": {}}


@dataclass
class Exploration:
    """The exploration state of an off-policy policy: explicit, and picklable with the policy.

    Args:
        learning_starts: Global env steps of uniformly random actions before the policy's own exploration.
        seed: The generator's seed (lightrl uses ``seed + rank + 10_000``).
        env_steps: The global env-step count the next actions are taken at (the collector sets it).
        generator: Draws the random actions, epsilon coins and exploration noise.
    """

    learning_starts: int = 0
    seed: int = 0
    env_steps: int = 0
    generator: torch.Generator = field(default_factory=torch.Generator)

    def reseed(self, seed: int) -> None:
        """Restart the generator from ``seed``."""
        self.seed = seed
        self.generator.manual_seed(seed)

    def __getstate__(self) -> dict[str, Any]:
        # The generator as bytes: a Generator pickled for another process (spawn) fails to rebuild its state tensor.
        return {**self.__dict__, "generator": bytes(self.generator.get_state().numpy())}

    def __setstate__(self, state: dict[str, Any]) -> None:
        generator = torch.Generator()
        generator.set_state(torch.frombuffer(bytearray(state["generator"]), dtype=torch.uint8))
        self.__dict__.update({**state, "generator": generator})

    @property
    def warming_up(self) -> bool:
        """Whether the next actions are uniformly random (before ``learning_starts``)."""
        return self.env_steps < self.learning_starts


class ExploringPolicy(Policy):
    """An off-policy policy: uniformly random actions until ``learning_starts``, then :meth:`explore_after_warmup`.

    Args:
        observation_space: The env's single observation space.
        action_space: The env's single action space (Discrete or Box).
        learning_starts: Global env steps of uniformly random actions.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, learning_starts: int = 0):
        super().__init__(observation_space, action_space)
        self.exploration = Exploration(learning_starts)

    def explore(self, obs: Tensor) -> Tensor:
        """Uniformly random actions during the warm-up, then the algorithm's exploring actions."""
        if self.exploration.warming_up:  # as in SB3 and CleanRL's SAC/TD3
            return self.uniform_actions(obs)
        return self.explore_after_warmup(obs)

    def uniform_actions(self, obs: Tensor) -> Tensor:
        """Uniformly random actions, one per observation of ``obs`` (:meth:`random_actions`)."""
        leading = leading_tensor(obs)
        return self.random_actions(leading.shape[0], leading.device)

    def explore_after_warmup(self, obs: Tensor) -> Tensor:
        """The algorithm's exploring actions after the warm-up (override this)."""
        raise NotImplementedError

    def random_actions(self, n: int, device: torch.device | str = "cpu") -> Tensor:
        """``n`` uniformly random actions from the exploration generator."""
        space, generator = self.action_space, self.exploration.generator
        if isinstance(space, spaces.Discrete):
            return torch.randint(int(space.n), (n,), generator=generator).add_(int(space.start)).to(device)
        low = torch.as_tensor(space.low, dtype=torch.float32)
        high = torch.as_tensor(space.high, dtype=torch.float32)
        return (low + torch.rand((n, *space.shape), generator=generator) * (high - low)).to(device)
