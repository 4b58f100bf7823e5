"""Checkpoints that cannot run code: safe loading, and the signed env state that resume restores.

A checkpoint is a pickle, and unpickling can call any function. lightrl reads checkpoints in two ways:

- Everything but the envs (weights, hyperparameters, optimizer, RNG states, counters, replay buffer) is
  tensors, numbers, strings and bytes, read with ``torch.load(weights_only=True)``: torch's unpickler
  that builds only those types and refuses any other (:func:`load_checkpoint`, :func:`load_module`).
- The envs' episodes in progress are a cloudpickle of the sub-envs (any env class, wrappers holding
  lambdas), which only a full unpickler can rebuild. The writer signs those bytes with an HMAC key that
  only it holds (:func:`checkpoint_key`), and resume unpickles them only when the signature matches
  (:func:`open_env_state`). Without a match the run resumes everything else and the episodes restart.

Hyperparameters name code to import (``env_id``, ``env_wrappers``). :func:`check_wrappers` admits from
a checkpoint only wrappers that are ``gymnasium.Wrapper`` classes; a function named there is refused
unless the caller trusts the checkpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import os
import pickle
import secrets
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

#: Environment variable holding the signing key (any string), for runs whose processes share no home folder.
KEY_ENV = "LIGHTRL_CHECKPOINT_KEY"


def key_path() -> Path:
    """Where this user's signing key lives: ``$XDG_CONFIG_HOME/lightrl/checkpoint.key`` (``~/.config/...``)."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "lightrl" / "checkpoint.key"


def checkpoint_key(create: bool = False) -> bytes | None:
    """The key that signs env state: ``$LIGHTRL_CHECKPOINT_KEY``, else the key file (made, mode 0600, if ``create``).

    Returns None when there is no key and ``create`` is False.
    """
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode()
    path = key_path()
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # fails if another process made the key first: then its key is the one
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        return None


def signature(key: bytes, parts: list[bytes]) -> str:
    """HMAC-SHA256 of ``parts``, each length-prefixed so that no two lists sign alike."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(len(part).to_bytes(8, "little"))
        mac.update(part)
    return mac.hexdigest()


def sign_env_state(state: dict[str, bytes]) -> dict[str, Any]:
    """``state`` (pickled ``envs`` and ``action_space``) with its ``signature``, by this user's key.

    Where no key can be made (a read-only home folder without ``$LIGHTRL_CHECKPOINT_KEY``), the state is
    ``{"error": reason}``, as for envs that cannot be pickled: resume restarts the episodes and says why.
    """
    try:
        key = checkpoint_key(create=True)
    except OSError as err:
        return {"error": f"no key to sign the env state with ({err}); set {KEY_ENV}"}
    return {**state, "signature": signature(key, [state["envs"], state["action_space"]])}


def open_env_state(state: dict[str, Any]) -> tuple[Any, Any] | str:
    """Unpickle a :func:`sign_env_state` state if its signature is this user's: ``(envs, action_space_state)``.

    Returns, instead, why it cannot be restored (a string): unsigned, signed with another key, or unreadable.
    Nothing is unpickled before the signature has been checked.
    """
    envs, space = state.get("envs"), state.get("action_space")
    if not isinstance(envs, bytes) or not isinstance(space, bytes):
        return "the checkpoint's env state is not the bytes lightrl writes"
    given = state.get("signature")
    if not isinstance(given, str):
        return "the checkpoint's env state is not signed (written by an older lightrl or altered); only signed env state is unpickled"
    key = checkpoint_key()
    if key is None or not hmac.compare_digest(given, signature(key, [envs, space])):
        where = f"${KEY_ENV}" if os.environ.get(KEY_ENV) else str(key_path())
        return (
            f"the checkpoint's env state is not signed with this machine's key ({where}): it was written elsewhere or altered, "
            f"and unpickling it could run code. If you wrote it, set {KEY_ENV} or copy the key file where the checkpoint was written"
        )
    try:
        return pickle.loads(envs), pickle.loads(space)
    except Exception as err:  # an env class that changed or is gone since the checkpoint was written
        return f"the checkpoint's env state cannot be unpickled here ({type(err).__name__}: {err})"


def load_checkpoint(path: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on CPU: tensors, numbers, strings and bytes only, no code."""
    return torch.load(path, map_location="cpu", weights_only=True, **kwargs)


def import_path(path: str) -> Any:
    """The object at ``module.Name`` (importing the module), or raise ``ValueError``."""
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot import {path!r} ({type(err).__name__}: {err})") from None


TRUST_HINT = "if you trust it, load it with lightrl.load_module(path, trusted=True) (lightrl evaluate/export: --trusted)"


def check_wrappers(hparams: dict[str, Any], source: str, trust_hint: str = TRUST_HINT) -> None:
    """Raise ``ValueError`` unless every ``env_wrappers`` entry of ``hparams`` names a ``gymnasium.Wrapper`` class.

    A checkpoint's hyperparameters are data, but an ``env_wrappers`` entry names a callable that is called
    with ``init_args`` when the envs are made: from a checkpoint of unknown origin, only wrapper classes.
    """
    for i, entry in enumerate(hparams.get("env_wrappers") or ()):
        path = entry.get("class_path") if isinstance(entry, dict) else entry
        target = import_path(path) if isinstance(path, str) else None
        if not (isinstance(target, type) and issubclass(target, gym.Wrapper)):
            raise ValueError(
                f"{source}: env_wrappers[{i}] is {path!r}, not a gymnasium.Wrapper class, and a checkpoint of unknown origin "
                f"could name any function there; {trust_hint}."
            )


def rlmodule_class(checkpoint: dict[str, Any], source: str) -> type:
    """The :class:`~lightrl.algos.base.RLModule` subclass named in ``checkpoint``, or raise ``ValueError``."""
    from lightrl.algos.base import RLModule

    path = (checkpoint.get("lightrl") or {}).get("class_path")
    if not isinstance(path, str):
        raise ValueError(f"{source} was not written by a lightrl algorithm (it has no 'lightrl' entry).")
    cls = import_path(path)
    if not (isinstance(cls, type) and issubclass(cls, RLModule)):
        raise ValueError(f"{source} names {path!r} as its algorithm, which is not a lightrl RLModule subclass; refusing to load it.")
    return cls


def load_module(ckpt_path: str | os.PathLike, trusted: bool = False):
    """Load any lightrl algorithm from its checkpoint, whichever class wrote it, without running code from the file.

    The checkpoint is read with ``torch.load(weights_only=True)``; the class it names must be an
    :class:`~lightrl.algos.base.RLModule` subclass, and its ``env_wrappers`` ``gymnasium.Wrapper`` classes
    (``trusted=True`` admits functions too, for a checkpoint you wrote).

    Raises:
        ValueError: for a checkpoint that is not a lightrl one, or names a class or wrapper refused above.
    """
    source = f"checkpoint {str(ckpt_path)!r}"
    checkpoint = load_checkpoint(ckpt_path, mmap=True)  # mapped, not read: only its metadata is needed here
    cls = rlmodule_class(checkpoint, source)
    if not trusted:
        check_wrappers(checkpoint.get("hyper_parameters") or {}, source)
    return cls.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
