"""Deployment: :func:`export` (``lightrl.export``) writes a trained policy as a file that runs without lightrl or Lightning.

Two formats, chosen by the file's suffix:

- ``.onnx``: an ONNX model, written by torch's exporter (``torch.onnx.export``, dynamo-based), for
  onnxruntime, TensorRT and other ONNX runtimes. Needs the ``export`` extra (``onnx``, ``onnxscript``;
  ``onnxruntime`` to run it).
- ``.pt2``: a ``torch.export`` archive (an ``ExportedProgram``), loaded with ``torch.export.load`` by a
  process that has only torch.

Both hold the deterministic policy (:meth:`lightrl.policies.base.Policy.act`): one input ``obs``, float32
observations ``[batch, *obs_shape]`` (images as their 0-255 pixel values; int64 indices ``[batch]`` for a
Discrete observation space), or for a Dict observation space one such input per key, named after it; and
one output ``actions``: int64 for Discrete, MultiDiscrete and MultiBinary actions, float32 within the
bounds for Box actions. The batch dimension is dynamic.
A policy trained with action masks takes the mask as one more input, ``action_mask``: bool ``[batch, n]``
(``n`` actions, or ``sum(nvec)`` for MultiDiscrete), True where an action is valid; the env's own observation
is then the input ``obs`` (or, for a Dict observation space, one input per key as before).
A policy with a recurrent core (``recurrent``) takes its state as one more input, ``state``: float32
``[batch, layers, state_size]``, zeros at an episode's first step; and returns the next state as a second output,
``next_state``, to feed back with the next observation (zeroed again where an episode ends).
A JSON description of the spaces and the algorithm is stored with the model (ONNX metadata
``lightrl``; the ``.pt2`` archive's extra file ``lightrl.json``).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from lightrl.envs.masks import ActionMask, is_masked
from lightrl.policies import Policy

#: File suffixes :func:`export` writes, and the format of each.
FORMATS = {".onnx": "ONNX", ".pt2": "torch.export"}
ONNX_MISSING = "exporting to ONNX needs the onnx and onnxscript packages: pip install 'lightrl[export]'"


class DeterministicPolicy(nn.Module):
    """A policy's :meth:`~lightrl.policies.base.Policy.act` with the exported signature: ``obs`` in, ``actions`` out.

    ``obs`` is a tensor, or for a Dict observation space a dict of tensors (exported as one input per key).

    Args:
        policy: The policy to wrap (a copy of it, on CPU, is what gets exported).
    """

    def __init__(self, policy: Policy):
        super().__init__()
        self.policy = policy
        self.discrete = not isinstance(policy.action_space, spaces.Box)

    def forward(self, obs: Tensor | dict[str, Tensor]) -> Tensor:
        """Actions ``[batch, ...]``: int64 for Discrete, MultiDiscrete and MultiBinary spaces, float32 in the bounds for Box spaces."""
        actions = self.policy.act(obs)
        return actions.to(torch.int64) if self.discrete else actions.to(torch.float32)


class RecurrentDeterministicPolicy(DeterministicPolicy):
    """A recurrent policy's deterministic step with the exported signature: ``obs`` and ``state`` in, ``actions`` and ``next_state`` out.

    Args:
        policy: A :class:`~lightrl.policies.RecurrentActorCriticPolicy` (a copy of it, on CPU, is what gets exported).
    """

    def forward(self, obs: Tensor | dict[str, Tensor], state: Tensor) -> tuple[Tensor, Tensor]:
        """Actions as :class:`DeterministicPolicy` gives them, and the next state ``[batch, layers, state_size]`` (float32)."""
        actions, state = self.policy.act_with_state(obs, state)
        return (actions.to(torch.int64) if self.discrete else actions.to(torch.float32)), state.to(torch.float32)


def deployable(source: Any) -> DeterministicPolicy:
    """The deterministic policy of ``source`` (an algorithm with a ``policy``, or a policy), on CPU in eval mode
    (a :class:`RecurrentDeterministicPolicy` for a policy with memory)."""
    policy = source if isinstance(source, Policy) else getattr(source, "policy", None)
    if not isinstance(policy, Policy):
        raise TypeError(f"export takes a lightrl algorithm or a lightrl.policies.Policy, got {type(source).__name__}.")
    space = policy.observation_space
    parts = space.spaces.values() if isinstance(space, spaces.Dict) else [space]
    if not all(isinstance(part, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)) for part in parts):
        raise ValueError(f"export supports Box, Discrete, MultiDiscrete, MultiBinary and Dict observation spaces, got {space}.")
    wrapper = DeterministicPolicy if policy.initial_state(1) is None else RecurrentDeterministicPolicy
    return wrapper(copy.deepcopy(policy).cpu().eval()).eval()


def input_names(space: spaces.Space) -> list[str]:
    """The exported inputs: ``obs``, or a Dict space's keys."""
    return list(space.spaces) if isinstance(space, spaces.Dict) else ["obs"]


def input_dtype(space: spaces.Space) -> torch.dtype:
    """What an exported input takes: int64 indices for a Discrete or MultiDiscrete space, bool for an action mask,
    float32 values for a Box or MultiBinary."""
    if isinstance(space, ActionMask):
        return torch.bool
    return torch.int64 if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)) else torch.float32


def example_obs(policy: Policy, batch: int = 2) -> Tensor | dict[str, Tensor]:
    """A batch of observations from the observation space, as the exported inputs take them (a batch of 2:
    torch.export specialises 1); a dict of them for a Dict space."""
    space = policy.observation_space
    if isinstance(space, spaces.Dict):
        return {key: sample_batch(part, batch) for key, part in space.spaces.items()}
    return sample_batch(space, batch)


def sample_batch(space: spaces.Space, batch: int) -> Tensor:
    """``batch`` samples of a space other than Dict, with the exported input's dtype."""
    return torch.as_tensor(np.stack([space.sample() for _ in range(batch)])).to(input_dtype(space))


def description(source: Any, policy: Policy) -> dict[str, Any]:
    """What a deployment needs to know beside the graph: the spaces, the state of a recurrent policy and where the policy comes from."""
    hparams = getattr(source, "hparams", {})
    space = policy.observation_space
    parts = space.spaces if isinstance(space, spaces.Dict) else {"obs": space}
    state = policy.initial_state(1)
    recurrent = {} if state is None else {
        "inputs": [*input_names(space), "state"],
        "outputs": ["actions", "next_state"],
        "state_shape": list(state.shape[1:]),  # per env; zeros at an episode's first step
        "recurrent": hparams.get("recurrent"),
    }  # fmt: skip
    return {
        "algorithm": type(source).__name__,
        "env_id": hparams.get("env_id"),
        "observation_space": repr(space),
        "observation_shape": None if isinstance(space, spaces.Dict) else list(space.shape),
        "action_space": repr(policy.action_space),
        "inputs": input_names(space),
        "input_shapes": {name: list(part.shape) for name, part in parts.items()},
        "input_dtypes": {name: str(input_dtype(part)).removeprefix("torch.") for name, part in parts.items()},
        "outputs": ["actions"],
        # Inside the graph: feed it the observations of the wrapped env, unnormalized.
        "normalize_obs": policy.obs_normalizer is not None,
        # The "action_mask" input, if any, and where training read the env's masks from (lightrl.envs.masks).
        "action_mask": getattr(source, "action_mask_source", None) if is_masked(space) else None,
        # Outside the graph: the deployment wraps its env with these, as training did.
        "env_wrappers": hparams.get("env_wrappers") or [],
        **recurrent,
    }


def export(module: Any, path: str | Path) -> Path:
    """Write the deterministic policy of ``module`` to ``path`` (``.onnx`` or ``.pt2``); returns the path.

    Args:
        module: A lightrl algorithm (its ``policy`` is exported), or a :class:`~lightrl.policies.Policy`.
        path: Where to write: ``*.onnx`` for ONNX, ``*.pt2`` for a ``torch.export`` archive.

    Raises:
        ValueError: for another suffix, or a space that cannot be exported.
        ImportError: for ``.onnx`` without the ``onnx`` and ``onnxscript`` packages.

    Example::

        lightrl.export(model, "policy.onnx")

        import onnxruntime as ort
        session = ort.InferenceSession("policy.onnx")
        actions = session.run(["actions"], {"obs": obs.astype("float32")})[0]
    """
    path = Path(path)
    if path.suffix not in FORMATS:
        raise ValueError(f"export writes {', '.join(FORMATS)} files, got {path.name!r}; name the output policy.onnx or policy.pt2.")
    wrapper = deployable(module)
    meta = json.dumps(description(module, wrapper.policy))
    obs = example_obs(wrapper.policy)
    batch = torch.export.Dim("batch", min=1)
    dynamic = {"obs": {key: {0: batch} for key in obs} if isinstance(obs, dict) else {0: batch}}
    state = wrapper.policy.initial_state(2)
    args = (obs,) if state is None else (obs, state)
    if state is not None:
        dynamic["state"] = {0: batch}
    with torch.no_grad():
        program = torch.export.export(wrapper, args, dynamic_shapes=dynamic)
    if path.suffix == ".pt2":
        with warnings.catch_warnings():
            # orthogonal_ leaves the first layer's weight transposed in memory, which torch's archive writer reports as
            # an incomplete tensor "when your weights are not on CPU"; the exported weights are on CPU and saved whole.
            # Making them contiguous would change the matmul's rounding, and the archive would no longer act exactly
            # as the policy does.
            warnings.filterwarnings("ignore", message=re.escape("No complete tensor found in the group!"), category=UserWarning)
            torch.export.save(program, path, extra_files={"lightrl.json": meta})
        return path
    inputs, outputs = input_names(wrapper.policy.observation_space), ["actions"]
    if state is not None:
        inputs, outputs = [*inputs, "state"], [*outputs, "next_state"]
    write_onnx(program, path, meta, inputs, outputs)
    return path


def write_onnx(program: torch.export.ExportedProgram, path: Path, meta: str, inputs: list[str] | None = None, outputs: list[str] | None = None) -> None:
    """Write ``program`` as ONNX with torch's exporter; its inputs are ``inputs`` (``["obs"]``) and its outputs ``outputs`` (``["actions"]``)."""
    try:
        import onnx  # noqa: F401  (needed by torch.onnx.export)
        import onnxscript  # noqa: F401
    except ImportError:
        raise ImportError(ONNX_MISSING) from None
    with quiet_logger("torch.onnx"), warnings.catch_warnings():  # its registry warns, once per process, about torchvision ops we do not use
        # torch 2.13's exporter copies its own tree specs through a deprecated isinstance check.
        warnings.filterwarnings("ignore", message=re.escape("`isinstance(treespec, LeafSpec)` is deprecated"), category=FutureWarning)
        onnx_program = torch.onnx.export(program, input_names=inputs or ["obs"], output_names=outputs or ["actions"], dynamo=True, verbose=False)
    model = onnx_program.model_proto
    for value in (*model.graph.input, *model.graph.output):  # the exporter names the dynamic dimension s0, s1...
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    entry = model.metadata_props.add()
    entry.key, entry.value = "lightrl", meta
    onnx.save(model, str(path))


@contextmanager
def quiet_logger(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise logger ``name``'s level to ``level`` inside the block."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)
