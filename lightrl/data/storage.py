"""How observations and actions are held as tensors, for every supported space.

A batch of observations is a tensor for Box, Discrete, MultiDiscrete and MultiBinary spaces, and a dict of
such tensors (one per key, in the space's order) for Dict spaces. Images stay uint8, Discrete and
MultiDiscrete observations are int64 indices (one-hot encoded only inside the networks, so that storage
keeps one integer per dimension), bool Boxes (action masks, :class:`~lightrl.envs.masks.ActionMask`) stay bool,
other Box and MultiBinary observations are float32.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

Observations = Tensor | dict[str, Tensor]


def obs_dtype(space: spaces.Space) -> torch.dtype:
    """Storage dtype of the observations of a space other than Dict: uint8 images stay uint8, bool Boxes (action
    masks) bool, Discrete and MultiDiscrete observations are int64 indices, everything else (Box, MultiBinary) is float32."""
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return torch.int64
    if space.dtype == np.bool_:
        return torch.bool
    return torch.uint8 if space.dtype == np.uint8 else torch.float32


def obs_dtypes(space: spaces.Space) -> torch.dtype | dict[str, torch.dtype]:
    """:func:`obs_dtype` of the space, or of each part of a Dict space."""
    if isinstance(space, spaces.Dict):
        return {key: obs_dtype(part) for key, part in space.spaces.items()}
    return obs_dtype(space)


def action_storage(space: spaces.Space) -> tuple[tuple[int, ...], torch.dtype]:
    """Shape of one stored action and its dtype: int64 indices for Discrete (``()``) and MultiDiscrete, float32
    for Box and for MultiBinary (whose 0/1 actions the Bernoulli log-probability takes as floats)."""
    if isinstance(space, spaces.Discrete):
        return (), torch.int64
    if isinstance(space, spaces.MultiDiscrete):
        return tuple(space.shape), torch.int64
    return tuple(space.shape), torch.float32


def zeros(leading: tuple[int, ...], space: spaces.Space, device: torch.device | str = "cpu") -> Observations:
    """Zero observations shaped ``[*leading, *obs_shape]``: a tensor, or a dict of tensors for a Dict space."""
    if isinstance(space, spaces.Dict):
        return {key: zeros(leading, part, device) for key, part in space.spaces.items()}
    return torch.zeros(leading + tuple(space.shape), dtype=obs_dtype(space), device=device)


def map_obs(fn: Callable[[Tensor], Tensor], obs: Observations) -> Observations:
    """``fn`` applied to a tensor of observations, or to each tensor of a dict of them."""
    if isinstance(obs, dict):
        return {key: fn(value) for key, value in obs.items()}
    return fn(obs)


def stack_obs(observations: list[Observations]) -> Observations:
    """``torch.stack`` of a list of observation tensors, or key by key of a list of dicts."""
    first = observations[0]
    if isinstance(first, dict):
        return {key: torch.stack([obs[key] for obs in observations]) for key in first}
    return torch.stack(observations)


def index_split(obs: Observations, index: Tensor, size: int) -> list[Observations] | tuple[Tensor, ...]:
    """``obs[index].split(size)``: the minibatches of a shuffled batch, as tensors or as dicts of tensors.

    Gathers with ``index_select``, which copies whole rows: ``obs[index]`` goes element by element on a CPU, about
    ten times slower for a rollout of image frames.
    """
    if not isinstance(obs, dict):
        return obs.index_select(0, index).split(size)
    parts = {key: value.index_select(0, index).split(size) for key, value in obs.items()}
    return [dict(zip(parts, chunk)) for chunk in zip(*parts.values())]


def leading_tensor(obs: Observations) -> Tensor:
    """A tensor of the batch ``obs`` (itself, or a dict's first), to read the batch size and device from."""
    return obs if isinstance(obs, Tensor) else next(iter(obs.values()))


def pack_bits(bits: Tensor) -> Tensor:
    """``[N, k]`` bools as ``[N, ceil(k / 8)]`` uint8, eight to a byte: ``np.packbits(bits, axis=1)``'s layout, on any device.

    Example::

        >>> pack_bits(torch.tensor([[True, False, True]]))  # 0b10100000
        tensor([[160]], dtype=torch.uint8)
    """
    n, k = bits.shape
    padded = torch.zeros((n, -(-k // 8) * 8), dtype=torch.uint8, device=bits.device)
    padded[:, :k] = bits
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=bits.device)
    return (padded.view(n, -1, 8) * weights).sum(dim=2, dtype=torch.uint8)


def unpack_bits(packed: Tensor, k: int) -> Tensor:
    """The ``[N, k]`` bools that :func:`pack_bits` packed into ``packed``."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & 1).flatten(1)[:, :k].bool()


class DictPacker:
    """Dict observations as one row of bytes per observation, and back, exactly.

    The replay buffer keeps the observations of a Dict space in one uint8 tensor, each observation once,
    with its parts' bytes side by side (``Tensor.view(torch.uint8)``: no conversion, so unpacking gives
    the very values that were packed); bool parts (action masks) as bits, eight to a byte (:func:`pack_bits`).
    Zero bytes unpack as zeros of every part.

    Args:
        space: A Dict of Box, Discrete, MultiDiscrete and MultiBinary spaces.

    Example::

        >>> packer = DictPacker(spaces.Dict({"pos": spaces.Box(-1, 1, (2,)), "room": spaces.Discrete(3)}))
        >>> packer.nbytes  # 2 float32 and 1 int64
        16
    """

    def __init__(self, space: spaces.Dict):
        self.parts: list[tuple[str, tuple[int, ...], torch.dtype, int, int]] = []
        start = 0
        for key, part in space.spaces.items():
            dtype = obs_dtype(part)
            count = int(np.prod(part.shape, dtype=np.int64))
            size = -(-count // 8) if dtype == torch.bool else count * torch.empty((), dtype=dtype).element_size()
            self.parts.append((key, tuple(part.shape), dtype, start, start + size))
            start += size
        self.nbytes = start

    def pack(self, obs: dict[str, Any], batch: bool = True) -> Tensor:
        """``[N, nbytes]`` uint8 rows of a batch of dict observations (``[nbytes]`` for one, ``batch=False``)."""
        chunks = []
        for key, shape, dtype, _, _ in self.parts:
            value = torch.as_tensor(obs[key]).to(dtype)
            value = value.reshape(-1, int(np.prod(shape, dtype=np.int64))) if batch else value.reshape(1, -1)
            chunks.append(pack_bits(value) if dtype == torch.bool else value.contiguous().view(torch.uint8))
        packed = torch.cat(chunks, dim=1)
        return packed if batch else packed[0]

    def unpack(self, packed: Tensor) -> dict[str, Tensor]:
        """The dict observations of ``[N, nbytes]`` rows."""
        n = packed.shape[0]
        return {key: self._unpack_part(packed[:, start:end], shape, dtype) for key, shape, dtype, start, end in self.parts}

    @staticmethod
    def _unpack_part(columns: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        n = columns.shape[0]
        if dtype == torch.bool:
            return unpack_bits(columns, int(np.prod(shape, dtype=np.int64))).reshape(n, *shape)
        # A fresh copy of the part's bytes: a view of another dtype needs its storage offset aligned to it.
        return columns.clone(memory_format=torch.contiguous_format).view(dtype).reshape(n, *shape)
