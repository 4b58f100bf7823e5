"""Observation encoders: from the observations of any supported space to one feature vector per sample.

Flat Box observations need none (the MLPs take them as they are) and image Boxes have the Nature-CNN;
these encoders are for the other observation spaces: Discrete and MultiDiscrete (one-hot), MultiBinary
(the bits as floats) and Dict (each part encoded, then concatenated in the space's key order, as
Stable-Baselines3's ``CombinedExtractor`` does).
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from lightrl.nn.cnn import NatureCNN

#: Features of the Nature-CNN of each image part of a Dict observation (Stable-Baselines3's ``cnn_output_dim``).
DICT_IMAGE_FEATURES = 256


def is_image_space(space: spaces.Space) -> bool:
    """True for channel-first uint8 image observations, as produced by the Atari preset."""
    return isinstance(space, spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8


class FlatVector(nn.Module):
    """Box or MultiBinary observations ``[B, *shape]`` as float32 vectors ``[B, prod(shape)]``.

    Args:
        space: A Box or a MultiBinary space.
    """

    def __init__(self, space: spaces.Box | spaces.MultiBinary):
        super().__init__()
        self.out_features = int(np.prod(space.shape))

    def forward(self, obs: Tensor) -> Tensor:
        """``obs`` flattened after the batch dimension, as float32."""
        return obs.flatten(1).float()


class OneHot(nn.Module):
    """Discrete observations ``[B]`` (the integers ``start .. start + n - 1``) as one-hot float32 vectors ``[B, n]``.

    Args:
        space: A Discrete space.

    Example::

        >>> OneHot(spaces.Discrete(3))(torch.tensor([2, 0]))
        tensor([[0., 0., 1.],
                [1., 0., 0.]])
    """

    def __init__(self, space: spaces.Discrete):
        super().__init__()
        self.out_features = int(space.n)
        # A comparison rather than F.one_hot: the same values, and it exports to ONNX as plain ops.
        values = torch.arange(int(space.start), int(space.start) + int(space.n))
        self.register_buffer("values", values, persistent=False)
        self.start = int(space.start)

    def forward(self, obs: Tensor) -> Tensor:
        """The one-hot encoding of ``obs``."""
        return (obs.long().unsqueeze(-1) == self.values).float()

    def index(self, obs: Tensor) -> Tensor:
        """The position of the 1 in each of :meth:`forward`'s vectors (``obs - start``)."""
        return obs.long() - self.start


class MultiOneHot(nn.Module):
    """1-D MultiDiscrete observations ``[B, D]`` as the one-hot encodings of each dimension, concatenated ``[B, sum(nvec)]``.

    As Stable-Baselines3 and ``gymnasium.wrappers.FlattenObservation`` encode them.

    Args:
        space: A 1-D MultiDiscrete space (any ``start``).

    Example::

        >>> MultiOneHot(spaces.MultiDiscrete([2, 3]))(torch.tensor([[1, 0], [0, 2]]))
        tensor([[0., 1., 1., 0., 0.],
                [1., 0., 0., 0., 1.]])
    """

    def __init__(self, space: spaces.MultiDiscrete):
        super().__init__()
        nvec, start = space.nvec.astype(np.int64), np.asarray(space.start, dtype=np.int64)
        self.out_features = int(nvec.sum())
        # Output feature i is "dimension dims[i] equals values[i]": one gather and one comparison, plain ONNX ops.
        dims = np.repeat(np.arange(len(nvec)), nvec)
        values = np.concatenate([s + np.arange(n) for s, n in zip(start, nvec)])
        self.register_buffer("dims", torch.from_numpy(dims), persistent=False)
        self.register_buffer("values", torch.from_numpy(values), persistent=False)

    def forward(self, obs: Tensor) -> Tensor:
        """The concatenated one-hot encodings of ``obs``."""
        return (obs.long()[:, self.dims] == self.values).float()


class MultiInputEncoder(nn.Module):
    """Dict observations as one feature vector: the parts' encodings concatenated in key order.

    Image parts (``(C, H, W)`` uint8 Boxes) go through a Nature-CNN of their own with ``image_features``
    outputs, Discrete and MultiDiscrete parts are one-hot encoded and the other Box and MultiBinary parts
    flattened, as in Stable-Baselines3's ``MultiInputPolicy``. Only the CNNs have parameters.

    Args:
        space: A Dict of Box, Discrete, MultiDiscrete and MultiBinary spaces.
        image_features: Output size of each image part's CNN.

    Example::

        >>> space = spaces.Dict({"goal": spaces.Box(-1, 1, (2,)), "room": spaces.Discrete(4)})
        >>> MultiInputEncoder(space)({"goal": torch.zeros(5, 2), "room": torch.zeros(5, dtype=torch.long)}).shape
        torch.Size([5, 6])
    """

    def __init__(self, space: spaces.Dict, image_features: int = DICT_IMAGE_FEATURES):
        super().__init__()
        self.keys = list(space.spaces)
        # A ModuleList in key order, not a ModuleDict: a Dict's keys may hold dots, which module names cannot.
        self.parts = nn.ModuleList([part_encoder(part, image_features) for part in space.spaces.values()])
        self.out_features = sum(part.out_features for part in self.parts)

    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        """Features ``[B, out_features]`` of a dict of observation batches."""
        return torch.cat([encode(obs[key]) for key, encode in zip(self.keys, self.parts)], dim=1)


def part_encoder(space: spaces.Space, image_features: int = DICT_IMAGE_FEATURES) -> nn.Module:
    """The encoder of one part of a Dict observation (or of a whole non-Box one): CNN, one-hot or flatten."""
    if is_image_space(space):
        return NatureCNN(space.shape[0], features_dim=image_features, image_size=space.shape[1:])
    if isinstance(space, spaces.Discrete):
        return OneHot(space)
    if isinstance(space, spaces.MultiDiscrete):
        return MultiOneHot(space)
    return FlatVector(space)


def observation_encoder(space: spaces.Space) -> nn.Module | None:
    """The encoder for ``space``: None for a Box (the networks take vectors and images as they are), else a
    :class:`OneHot` (Discrete), :class:`MultiOneHot` (MultiDiscrete), :class:`FlatVector` (MultiBinary) or
    :class:`MultiInputEncoder` (Dict). Its ``out_features`` is the feature size."""
    if isinstance(space, spaces.Box):
        return None
    if isinstance(space, spaces.Dict):
        return MultiInputEncoder(space)
    return part_encoder(space)


def has_images(space: spaces.Space) -> bool:
    """Whether ``space`` is an image Box, or a Dict with an image part."""
    if isinstance(space, spaces.Dict):
        return any(is_image_space(part) for part in space.spaces.values())
    return is_image_space(space)
