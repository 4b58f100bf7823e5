"""Multi-layer perceptrons with the orthogonal initialisation used by CleanRL and SB3."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    """Orthogonal weights with gain ``std`` and a constant bias."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


def input_major(layer: nn.Linear) -> nn.Linear:
    """Store the weight of ``layer`` transposed in memory (``[in, out]``) when it has fewer inputs than outputs.

    Only the memory layout changes, not the values or the shape. Autograd computes the gradients of
    ``F.linear`` by matrix products whose form follows the weight's layout; with the usual ``[out, in]``
    layout and few inputs (an observation of 4 numbers), the weight and input gradients come from
    products with only ``in_features`` output columns, which MKL runs much slower than the transposed
    products this layout selects (docs/benchmarks.md has the timings). Optimizers, ``state_dict`` and
    copies keep the layout.
    """
    if layer.in_features < layer.out_features:
        layer.weight = nn.Parameter(layer.weight.detach().t().contiguous().t(), requires_grad=layer.weight.requires_grad)
    return layer


#: The hidden activations an actor-critic's MLPs take, by name (PPO's and A2C's ``activation``).
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def mlp(
    in_features: int,
    hidden_sizes: Sequence[int],
    out_features: int | None = None,
    activation: type[nn.Module] = nn.Tanh,
    out_std: float = 1.0,
) -> nn.Sequential:
    """An MLP ``in -> hidden_sizes -> out``; hidden layers get gain sqrt(2), the output layer ``out_std``.

    With ``out_features=None`` the network ends at the last hidden activation.
    """
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden_sizes:
        layers += [input_major(layer_init(nn.Linear(width, size))), activation()]
        width = size
    if out_features is not None:
        layers.append(layer_init(nn.Linear(width, out_features), std=out_std))
    return nn.Sequential(*layers)


def sequential_forward(net: nn.Sequential, x: Tensor, index_input: bool = False) -> Tensor:
    """``net(x)`` for a ``Sequential`` of ``Linear``/``Tanh``/``ReLU`` layers, without ``nn.Module.__call__``.

    The same ops as ``net(x)`` (``F.linear``, ``tanh``, ``relu``), so the result is identical, with less
    time in the per-layer call machinery (hooks, ``__call__``), which for the tiny MLPs of RL costs as
    much as a 64-wide matmul. An activation that follows a ``Linear`` runs in place on the layer's fresh
    output (autograd's backward of ``linear`` does not need it), which saves allocating a new buffer.
    ``x`` itself is never modified. Module hooks of the layers are not run. Other layer types are
    called as usual. docs/benchmarks.md has the measured gains.

    With ``index_input``, ``x`` holds integer indices ``[B]`` that stand for one-hot input vectors: the first
    ``Linear`` then looks up the matching columns of its weight and adds the bias, which is what it computes
    for a one-hot vector, without multiplying the zeros (a 500-state Taxi: 500 of them per row).
    """
    fresh = False  # does x hold the output of a Linear of this loop, which nothing else refers to?
    for layer in net:
        kind = type(layer)
        if kind is nn.Linear:
            x = F.embedding(x, layer.weight.t()) + layer.bias if index_input else F.linear(x, layer.weight, layer.bias)
            fresh, index_input = True, False
            continue
        if kind is nn.Tanh:
            x = torch.tanh_(x) if fresh else torch.tanh(x)
        elif kind is nn.ReLU:
            x = torch.relu_(x) if fresh else torch.relu(x)
        else:
            x = layer(x)
        fresh = False
    return x
