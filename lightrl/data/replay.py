"""A replay buffer of preallocated tensors that stores each observation once, with n-step sampling."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from lightrl.data.storage import DictPacker, action_storage, obs_dtype


class ReplayBuffer:
    """Circular replay buffer for the transitions of a vector env, one column per sub-env.

    Transitions are stored in rows of ``num_envs`` (one ``add`` per vector step), so the buffer holds
    ``num_rows = ceil(capacity / num_envs)`` rows and at most ``num_rows * num_envs`` transitions.
    Each observation is stored once: the next observation of a transition is the observation of the
    following transition in the same column. The ring of observations has one more row than the ring
    of transitions, holding the ``next_obs`` of the newest step, so the newest transitions can be
    sampled too.

    Where that chain is broken, the buffer knows it:

    - ``terminated``: the next observation is never used (``terminations=1`` removes the bootstrap)
      and is returned as zeros.
    - ``truncated``: the true last observation (``info["final_obs"]`` in SAME_STEP autoreset mode) is
      kept in a small side store, freed when its transition is overwritten, and returned as the next
      observation, with ``terminations=0`` so the target bootstraps from it.
    - A stream that is cut (``obs`` passed to :meth:`add` differs from the previous ``next_obs`` of a
      sub-env whose episode did not end, e.g. after a manual ``reset()``) is stored as a truncation.

    Dict observations (a buffer made by :meth:`for_spaces`) are stored once too: each as one row of bytes
    holding its parts side by side (:class:`~lightrl.data.storage.DictPacker`), so that everything above
    holds unchanged; :meth:`add` takes and :meth:`sample` returns dicts of tensors.

    Args:
        capacity: Number of transitions to keep in this process, rounded up to a multiple of ``num_envs``.
        num_envs: Number of sub-envs of the vector env; each :meth:`add` stores one transition per sub-env.
        obs_shape: Shape of one observation, e.g. ``(4, 84, 84)``.
        obs_dtype: Stored observation dtype, e.g. ``torch.uint8`` for Atari frames.
        action_shape: Shape of one action, ``()`` for discrete actions.
        action_dtype: Stored action dtype, e.g. ``torch.int64`` or ``torch.float32``.
        device: Where all tensors live, and where samples are returned.

    Raises:
        ValueError: if ``num_envs < 1`` or ``capacity < num_envs``.

    Example::

        rb = ReplayBuffer(100_000, envs.num_envs, (4,), torch.float32, (), torch.int64)
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        rb.add(obs, actions, rewards, terminations, truncations, next_obs, final_observations(infos))
        obs = next_obs
        data = rb.sample(256, n_step=3, gamma=0.99)
        target = data["rewards"] + data["discounts"] * (1 - data["terminations"]) * max_next_q
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        action_shape: tuple[int, ...],
        action_dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs}.")
        if capacity < num_envs:
            raise ValueError(
                f"capacity ({capacity}) must be at least num_envs ({num_envs}): every add() stores one "
                "transition per sub-env. Increase buffer_size or use fewer envs."
            )
        self.capacity = capacity
        self.num_envs = num_envs
        self.obs_shape = tuple(obs_shape)
        self.obs_dtype = obs_dtype
        self.action_shape = tuple(action_shape)
        self.action_dtype = action_dtype
        self.device = torch.device(device)
        self.num_rows = math.ceil(capacity / num_envs)

        rows, n = self.num_rows, num_envs
        # Observation row of the k-th add is k % (rows + 1); its next observation is row (k + 1) % (rows + 1).
        self.observations = torch.zeros((rows + 1, n, *self.obs_shape), dtype=obs_dtype, device=self.device)
        self.actions = torch.zeros((rows, n, *self.action_shape), dtype=action_dtype, device=self.device)
        self.rewards = torch.zeros((rows, n), dtype=torch.float32, device=self.device)
        self.terminations = torch.zeros((rows, n), dtype=torch.bool, device=self.device)
        self.truncations = torch.zeros((rows, n), dtype=torch.bool, device=self.device)
        # Side store of the final observations of truncated transitions; grows on demand.
        self.final_obs = torch.zeros((n, *self.obs_shape), dtype=obs_dtype, device=self.device)
        self.final_used = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.final_slot = torch.full((rows, n), -1, dtype=torch.int32, device=self.device)
        self.num_adds = 0
        self._last_next_obs: Tensor | None = None  # the next_obs of the last add, to skip comparing it with obs
        #: Packs Dict observations into rows of bytes (:meth:`for_spaces`); None for tensor observations.
        self.packer: DictPacker | None = None
        self._last_next_dict: dict[str, Tensor] | None = None  # the dict behind _last_next_obs, with a packer
        self._index_views(host=self.device.type == "cpu")

    @classmethod
    def for_spaces(
        cls,
        capacity: int,
        num_envs: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: torch.device | str = "cpu",
    ) -> ReplayBuffer:
        """A buffer for an env's single observation and action spaces: Box, Discrete, MultiDiscrete, MultiBinary, or a Dict of those.

        Example::

            rb = ReplayBuffer.for_spaces(100_000, envs.num_envs, envs.single_observation_space, envs.single_action_space)
        """
        action_shape, action_dtype = action_storage(action_space)
        if not isinstance(observation_space, spaces.Dict):
            return cls(capacity, num_envs, observation_space.shape, obs_dtype(observation_space), action_shape, action_dtype, device)
        packer = DictPacker(observation_space)
        buffer = cls(capacity, num_envs, (packer.nbytes,), torch.uint8, action_shape, action_dtype, device)
        buffer.packer = packer
        return buffer

    def _index_views(self, host: bool) -> None:
        """The views that add() and one-step sampling index: numpy arrays with ``host``, else the tensors.

        On the CPU numpy views share the tensors' memory, and numpy's indexing has less per-call
        overhead than torch's on the small indices of one step, which makes about twenty of them.
        """
        self._host = host
        self._ring = self._ring_tensors()
        if host:
            self._ring = {name: tensor.numpy() for name, tensor in self._ring.items()}
        # Rows and sub-envs merged: transition (row, env) is at row * num_envs + env.
        self._flat = {name: x.reshape(-1, *x.shape[2:]) for name, x in self._ring.items()}

    # ----------------------------------------------------------------------------------------- size

    @property
    def pos(self) -> int:
        """Row that the next :meth:`add` writes."""
        return self.num_adds % self.num_rows

    @property
    def full(self) -> bool:
        """Whether every row has been written at least once (so the next add overwrites the oldest)."""
        return self.num_adds >= self.num_rows

    def __len__(self) -> int:
        return min(self.num_adds, self.num_rows) * self.num_envs

    @property
    def nbytes(self) -> int:
        """Bytes held by all tensors of the buffer, the side store of final observations included."""
        return sum(t.nbytes for t in self._tensors().values())

    @property
    def bytes_per_transition(self) -> float:
        """:attr:`nbytes` divided by the number of transitions the buffer can hold."""
        return self.nbytes / (self.num_rows * self.num_envs)

    # ------------------------------------------------------------------------------------------ add

    def add(
        self,
        obs: Any,
        action: Any,
        reward: Any,
        terminated: Any,
        truncated: Any,
        next_obs: Any,
        final_obs: Mapping[int, Any] | None = None,
    ) -> None:
        """Store the transitions of one vector step, one per sub-env.

        Args:
            obs: ``[num_envs, *obs_shape]`` observations the actions were taken in (the previous ``next_obs``).
                The very tensor passed as ``next_obs`` last time continues the stream from the copy the
                buffer took then; any other tensor is compared with that copy, and a sub-env whose
                observation differs (an env reset by hand) ends its previous transition as truncated.
            action: ``[num_envs, *action_shape]`` actions.
            reward: ``[num_envs]`` rewards.
            terminated: ``[num_envs]`` whether each episode terminated (no bootstrap).
            truncated: ``[num_envs]`` whether each episode was truncated (bootstrap from the final observation).
                A step both terminated and truncated counts as terminated.
            next_obs: ``[num_envs, *obs_shape]`` observations returned by the vector env: the reset
                observation for sub-envs whose episode ended.
            final_obs: Sub-env index -> true last observation, for the sub-envs whose episode ended
                (``lightrl.envs.vector.final_observations(infos)``). Required for truncated ones.

        Raises:
            ValueError: on a shape mismatch, or a truncated sub-env missing from ``final_obs``.
        """
        if self.packer is not None:
            obs, next_obs, final_obs = self._pack(obs, next_obs, final_obs)
        obs = self._as_batch(obs, self.obs_shape, self.obs_dtype, "obs")
        next_obs = self._as_batch(next_obs, self.obs_shape, self.obs_dtype, "next_obs")
        action = self._as_batch(action, self.action_shape, self.action_dtype, "action")
        reward = self._as_batch(reward, (), torch.float32, "reward")
        ring, as_array = self._ring, _numpy if self._host else _same  # what the ring takes
        terminated = as_array(self._as_batch(terminated, (), torch.bool, "terminated"))
        truncated = as_array(self._as_batch(truncated, (), torch.bool, "truncated")) & ~terminated
        truncated_envs = [i for i, flag in enumerate(truncated.tolist()) if flag] if truncated.any() else []
        final_obs = {int(i): v for i, v in (final_obs or {}).items()}
        missing = [i for i in truncated_envs if i not in final_obs]
        if missing:
            raise ValueError(
                f"Sub-envs {missing} were truncated but have no entry in final_obs. Pass "
                'final_observations(infos) (info["final_obs"] in SAME_STEP autoreset mode).'
            )
        finals = [
            self._as_batch(final_obs[i], self.obs_shape, self.obs_dtype, f"final_obs[{i}]", batch=False)
            for i in truncated_envs
        ]

        k, rows = self.num_adds, self.num_rows
        row = k % rows
        if k == 0:
            ring["observations"][0] = as_array(obs)
        elif obs is not self._last_next_obs:
            # Not the tensor passed as next_obs last time (the collector passes that one): compare the contents.
            self._join_stream(obs, (k - 1) % rows, self.observations[k % (rows + 1)])
        if k >= rows:
            self._evict(row)
        ring["actions"][row] = as_array(action)
        ring["rewards"][row] = as_array(reward)
        ring["terminations"][row] = terminated
        ring["truncations"][row] = truncated
        if truncated_envs:
            self._store_final(row, truncated_envs, torch.stack(finals))
        ring["observations"][(k + 1) % (rows + 1)] = as_array(next_obs)
        self._last_next_obs = next_obs
        self.num_adds = k + 1

    def _pack(self, obs: Any, next_obs: Any, final_obs: Mapping[int, Any] | None) -> tuple[Tensor, Tensor, dict[int, Tensor]]:
        """Dict observations as rows of bytes; the dict passed as ``next_obs`` last time gives the same packed tensor."""
        packed = self._last_next_obs if obs is self._last_next_dict and obs is not None else self.packer.pack(obs)
        self._last_next_dict = next_obs
        finals = {i: self.packer.pack(value, batch=False) for i, value in (final_obs or {}).items()}
        return packed, self.packer.pack(next_obs), finals

    def _join_stream(self, obs: Tensor, prev_row: int, pending: Tensor) -> None:
        """Make ``obs`` the start of this step, marking the previous transition truncated where the stream is cut."""
        changed = (pending != obs).reshape(self.num_envs, -1).any(dim=1)
        if not changed.any():
            return
        ended = self.terminations[prev_row] | self.truncations[prev_row]
        cut = (changed & ~ended).nonzero().flatten().tolist()
        if cut:
            self._store_final(prev_row, cut, pending[cut])
            self.truncations[prev_row, cut] = True
        pending[changed] = obs[changed]

    def _evict(self, row: int) -> None:
        if not (self._ring["final_slot"][row] >= 0).any():  # the usual case: no final observation stored
            return
        slots = self.final_slot[row]
        self.final_used[slots[slots >= 0].long()] = False
        self.final_slot[row] = -1

    def _store_final(self, row: int, envs: list[int], values: Tensor) -> None:
        free = (~self.final_used).nonzero().flatten()
        if free.numel() < len(envs):
            size = self.final_used.numel()
            grow = max(size, len(envs) - free.numel())
            self.final_obs = torch.cat([self.final_obs, self.final_obs.new_zeros((grow, *self.obs_shape))])
            self.final_used = torch.cat([self.final_used, self.final_used.new_zeros(grow)])
            free = (~self.final_used).nonzero().flatten()
        slots = free[: len(envs)]
        self.final_obs[slots] = values
        self.final_used[slots] = True
        self.final_slot[row, envs] = slots.to(torch.int32)

    def _as_batch(self, x: Any, shape: tuple[int, ...], dtype: torch.dtype, name: str, batch: bool = True) -> Tensor:
        expected = (self.num_envs, *shape) if batch else shape
        if isinstance(x, Tensor) and x.dtype == dtype and x.device == self.device and x.shape == expected:
            return x  # already right: skip the conversions
        x = torch.as_tensor(x, device=self.device)
        if tuple(x.shape) != expected:
            raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}.")
        return x.to(dtype)

    # --------------------------------------------------------------------------------------- sample

    def sample(
        self,
        batch_size: int,
        n_step: int = 1,
        gamma: float = 0.99,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Sample ``batch_size`` transitions uniformly, with replacement.

        With ``n_step > 1`` each sample is an n-step transition: rewards are summed over the next ``n_step``
        steps of the same sub-env, stopping early at the end of an episode. A start is only sampled once its
        window is written: the newest ``n_step - 1`` transitions of a sub-env are skipped unless its episode
        ended between them and the newest step.

        Args:
            batch_size: Number of transitions.
            n_step: Number of steps summed into each reward.
            gamma: Discount factor.
            generator: Random generator for reproducible sampling.

        Returns:
            A dict of tensors on :attr:`device`:

            - ``observations``: ``[B, *obs_shape]`` with the stored dtype.
            - ``actions``: ``[B, *action_shape]``.
            - ``rewards``: ``[B]`` float32, ``sum_{j<k} gamma**j * r_{t+j}``.
            - ``next_observations``: ``[B, *obs_shape]``, the observation ``k`` steps later: the final
              observation if the episode was truncated, zeros if it terminated.
            - ``terminations``: ``[B]`` float32, 1 if the episode terminated within the ``k`` steps.
            - ``discounts``: ``[B]`` float32, ``gamma**k``, so that the target is
              ``rewards + discounts * (1 - terminations) * V(next_observations)``.

            Here ``k = n_step``, or fewer if the episode ended earlier. With Dict observations
            (:meth:`for_spaces`), ``observations`` and ``next_observations`` are dicts of such tensors.

        Raises:
            ValueError: on bad arguments, or if no transition can be sampled yet.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        if n_step < 1:
            raise ValueError(f"n_step must be a positive integer, got {n_step}.")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
        if self.num_adds == 0:
            raise ValueError("The replay buffer is empty: add() transitions before sampling (see learning_starts).")
        data = self._sample_one_step(batch_size, gamma, generator) if n_step == 1 else self._sample_n_step(batch_size, n_step, gamma, generator)
        if self.packer is not None:
            data["observations"] = self.packer.unpack(data["observations"])
            data["next_observations"] = self.packer.unpack(data["next_observations"])
        return data

    def _sample_n_step(self, batch_size: int, n_step: int, gamma: float, generator: torch.Generator | None) -> dict[str, Tensor]:
        """:meth:`sample` with ``n_step > 1``."""
        ages, envs = self._sample_starts(batch_size, n_step, generator)
        start = self.num_adds - 1 - ages  # global index of each start transition
        rows = self.num_rows

        returns = torch.zeros(batch_size, dtype=torch.float32, device=self.device)
        steps = torch.zeros(batch_size, dtype=torch.float32, device=self.device)
        alive = torch.ones(batch_size, dtype=torch.bool, device=self.device)
        terminated = torch.zeros(batch_size, dtype=torch.bool, device=self.device)
        truncated = torch.zeros(batch_size, dtype=torch.bool, device=self.device)
        final_slot = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        for j in range(n_step):
            # Past the end of an episode the window may run into unwritten or old rows; `alive` masks them.
            row = (start + j) % rows
            returns += alive * (gamma**j) * self.rewards[row, envs]
            steps += alive
            term = alive & self.terminations[row, envs]
            trunc = alive & self.truncations[row, envs]
            terminated |= term
            truncated |= trunc
            final_slot = torch.where(trunc, self.final_slot[row, envs].long(), final_slot)
            alive &= ~(term | trunc)

        obs_dims = (1,) * len(self.obs_shape)
        next_observations = self.observations[(start + n_step) % (rows + 1), envs]
        next_observations = torch.where(truncated.view(-1, *obs_dims), self.final_obs[final_slot], next_observations)
        next_observations = next_observations.masked_fill(terminated.view(-1, *obs_dims), 0)
        return {
            "observations": self.observations[start % (rows + 1), envs],
            "actions": self.actions[start % rows, envs],
            "rewards": returns,
            "next_observations": next_observations,
            "terminations": terminated.float(),
            "discounts": torch.pow(torch.tensor(gamma, dtype=torch.float32, device=self.device), steps),
        }

    def _sample_one_step(self, batch_size: int, gamma: float, generator: torch.Generator | None) -> dict[str, Tensor]:
        """:meth:`sample` with ``n_step=1``: the same draws and tensors as its n-step loop, with a third of the ops."""
        n, rows, flat = self.num_envs, self.num_rows, self._flat
        u = self._draw(min(self.num_adds, rows) * n, batch_size, generator)  # age * n + env, as in _sample_starts
        host = self._host
        if host:
            u = u.numpy()
        ages, envs = (u, 0) if n == 1 else (u // n, u % n)
        start = self.num_adds - 1 - ages  # global index of each transition
        obs_row = start % (rows + 1)
        index, obs_index, next_index = (r * n + envs if n > 1 else r for r in (start % rows, obs_row, (obs_row + 1) % (rows + 1)))
        gather = _take if host else Tensor.index_select
        as_tensor = torch.from_numpy if host else _same
        terminated = as_tensor(gather(flat["terminations"], 0, index))
        truncated = gather(flat["truncations"], 0, index)  # never set together with terminations (see add)
        next_observations = as_tensor(gather(flat["observations"], 0, next_index))
        if truncated.any():
            truncated = as_tensor(truncated)
            slots = as_tensor(gather(flat["final_slot"], 0, index))[truncated].long()
            next_observations[truncated] = self.final_obs[slots]
        return {
            "observations": as_tensor(gather(flat["observations"], 0, obs_index)),
            "actions": as_tensor(gather(flat["actions"], 0, index)),
            "rewards": as_tensor(gather(flat["rewards"], 0, index)),
            "next_observations": next_observations.masked_fill_(terminated.view(-1, *(1,) * len(self.obs_shape)), 0),
            "terminations": terminated.float(),
            "discounts": torch.full((batch_size,), gamma, dtype=torch.float32, device=self.device),
        }

    def _draw(self, total: int, batch_size: int, generator: torch.Generator | None) -> Tensor:
        """``batch_size`` uniform integers in ``[0, total)`` from ``generator``, on :attr:`device`."""
        gen_device = generator.device if generator is not None else torch.device("cpu")
        return torch.randint(total, (batch_size,), generator=generator, device=gen_device).to(self.device)

    def _sample_starts(self, batch_size: int, n_step: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Ages (0 = newest row) and sub-env indices of uniformly drawn starts whose n-step window is written."""
        n = self.num_envs
        filled = min(self.num_adds, self.num_rows)
        recent = min(n_step - 1, filled)  # newest rows whose window may run past the newest step
        num_older = (filled - recent) * n
        candidates = torch.empty((0, 2), dtype=torch.long, device=self.device)
        if recent:
            recent_rows = (self.num_adds - 1 - torch.arange(recent, device=self.device)) % self.num_rows
            ended = self.terminations[recent_rows] | self.truncations[recent_rows]
            # A start of age a needs an episode end at one of the ages a, a - 1, ..., 0.
            candidates = (ended.cumsum(dim=0) > 0).nonzero()
        total = num_older + candidates.shape[0]
        if total == 0:
            raise ValueError(
                f"No transition has a complete {n_step}-step window yet ({self.num_adds} steps added). "
                "Add more steps before sampling (learning_starts >= n_step)."
            )
        u = self._draw(total, batch_size, generator)
        ages, envs = recent + u // n, u % n
        if candidates.shape[0]:
            is_recent = u >= num_older
            picked = candidates[(u - num_older).clamp(min=0, max=candidates.shape[0] - 1)]
            ages = torch.where(is_recent, picked[:, 0], ages)
            envs = torch.where(is_recent, picked[:, 1], envs)
        return ages, envs

    # ----------------------------------------------------------------------------------- save/load

    def _ring_tensors(self) -> dict[str, Tensor]:
        """The fixed-size tensors, indexed by row (the side store of final observations grows: not here)."""
        return {
            "observations": self.observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "terminations": self.terminations,
            "truncations": self.truncations,
            "final_slot": self.final_slot,
        }

    def _tensors(self) -> dict[str, Tensor]:
        return {**self._ring_tensors(), "final_obs": self.final_obs, "final_used": self.final_used}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: the tensors (not copied), the side store and the add counter."""
        return {**self._tensors(), "num_adds": self.num_adds}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a buffer built with the same arguments (tensors are copied).

        Raises:
            ValueError: if a key is missing or a tensor's shape does not match this buffer.
        """
        missing = [key for key in (*self._tensors(), "num_adds") if key not in state_dict]
        if missing:
            raise ValueError(f"Replay buffer state_dict is missing {missing}.")
        for name, tensor in self._tensors().items():
            value = state_dict[name]
            fixed = tensor.shape if name not in ("final_obs", "final_used") else tensor.shape[1:]
            shape = value.shape if name not in ("final_obs", "final_used") else value.shape[1:]
            if shape != fixed:
                raise ValueError(
                    f"Replay buffer state_dict[{name!r}] has shape {tuple(value.shape)}, which does not fit this "
                    f"buffer ({tuple(tensor.shape)}). Build the buffer with the same capacity, num_envs and shapes."
                )
        for name in ("observations", "actions", "rewards", "terminations", "truncations", "final_slot"):
            getattr(self, name).copy_(state_dict[name])
        self.final_obs = state_dict["final_obs"].to(self.device, self.obs_dtype, copy=True)
        self.final_used = state_dict["final_used"].to(self.device, torch.bool, copy=True)
        self.num_adds = int(state_dict["num_adds"])
        self._last_next_obs = None
        self._last_next_dict = None


def _same(x: Any) -> Any:
    return x


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().numpy()


def _take(values: np.ndarray, axis: int, index: np.ndarray) -> np.ndarray:
    """``Tensor.index_select``'s argument order for numpy arrays (``take`` skips the fancy-indexing machinery of ``[index]``)."""
    return values.take(index, axis=axis)
