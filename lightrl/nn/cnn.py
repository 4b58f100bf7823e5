"""The Nature-CNN image encoder of DQN (Mnih et al. 2015), as used by CleanRL's ``ppo_atari.py``."""

from __future__ import annotations

import torch
from torch import nn

from lightrl.nn.mlp import layer_init


#: The smallest frame height and width the Nature-CNN's three convolutions take.
MIN_IMAGE_SIZE = 36


class NatureCNN(nn.Module):
    """Three conv layers and a linear layer, from stacked frames to a feature vector.

    Conv(C, 32, 8, stride 4) - Conv(32, 64, 4, stride 2) - Conv(64, 64, 3, stride 1) - Linear(3136, 512),
    each followed by a ReLU, with orthogonal weights (gain sqrt(2)) and zero biases. Inputs are raw pixels
    in [0, 255] (``uint8`` or float) and are scaled by 1/255 here, so buffers can keep frames as ``uint8``.

    Args:
        in_channels: Number of stacked frames ``C`` in an input of shape ``(B, C, H, W)``.
        features_dim: Size of the output features.
        image_size: ``(H, W)`` of the frames; the size of the flattened conv output follows from it.

    Example::

        >>> encoder = NatureCNN(4)
        >>> encoder(torch.zeros(2, 4, 84, 84, dtype=torch.uint8)).shape
        torch.Size([2, 512])
    """

    def __init__(self, in_channels: int, features_dim: int = 512, image_size: tuple[int, int] = (84, 84)):
        super().__init__()
        self.convs = nn.Sequential(
            layer_init(nn.Conv2d(in_channels, 32, kernel_size=8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, kernel_size=4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, kernel_size=3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            n_flatten = self.convs(torch.zeros(1, in_channels, *image_size)).shape[1]
        self.linear = nn.Sequential(layer_init(nn.Linear(n_flatten, features_dim)), nn.ReLU())
        self.convs.to(memory_format=torch.channels_last)  # oneDNN's fastest layout on CPU, most of all at 32-true
        self.out_features = features_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``(B, features_dim)`` of frames ``(B, C, H, W)`` with pixel values in [0, 255]."""
        return self.linear(self.convs(scale_pixels(x)))


def scale_pixels(x: torch.Tensor) -> torch.Tensor:
    """Pixel values in [0, 255] scaled to [0, 1], in the dtype the convolutions compute in, in one copy.

    The dtype is the autocast dtype under autocast (``bf16-mixed``, ``16-mixed``), so the frames are converted
    once, straight from ``uint8``, rather than to float32 and again by the first convolution. The frames keep
    their layout: with the weights channels-last, oneDNN reorders them itself, faster than a channels-last
    copy of the ``uint8`` frames. Always a new tensor.
    """
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
    return x.to(dtype, copy=True).div_(255.0)
