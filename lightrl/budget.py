"""The env-step budget ends a run, not an epoch or step cap the user did not ask for.

Lightning fills in ``max_epochs=1000`` when neither ``max_epochs`` nor ``max_steps`` is given; with short
epochs (``timesteps_per_epoch``) that would cut a run short of ``total_timesteps`` without a word.
:func:`check_budget` lifts that default cap, and says in one line, before any env exists, when a cap
the user did set (``max_epochs``, ``max_steps``) stops the run before the budget.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from lightning.pytorch.callbacks import Timer

#: What Lightning 2.x sets ``max_epochs`` to when neither it nor ``max_steps`` is given (``_parse_loop_limits``).
LIGHTNING_DEFAULT_MAX_EPOCHS = 1000


def batches_per_epoch(module: Any) -> int | None:
    """``module.batches_per_epoch``: ``timesteps_per_epoch`` rounded to whole training batches (at least one).

    None if the algorithm's batches vary in size (``env_steps_per_batch`` is None): its run is then one epoch.
    """
    per_batch = module.env_steps_per_batch
    if per_batch is None:
        return None
    return max(1, round(module.hparams.timesteps_per_epoch / per_batch))


def batches_needed(module: Any) -> int | None:
    """Training batches from env step 0 to ``total_timesteps`` (None if the algorithm's batches vary in size)."""
    per_batch = module.env_steps_per_batch
    if per_batch is None:
        return None
    warmup = module.hparams.get("learning_starts", 0) or 0  # off-policy: collected before the first update phase
    return max(1, math.ceil(max(module.hparams.total_timesteps - warmup, 0) / per_batch))


def optimizer_steps_per_batch(module: Any) -> tuple[int, bool]:
    """Lightning's ``global_step`` per training batch (it counts optimizer steps), and whether that is exact.

    PPO: ``update_epochs * num_minibatches`` (fewer if ``target_kl`` stops an update early); DQN: its gradient
    steps; otherwise at least one optimizer step per gradient step, or per batch.
    """
    hp = module.hparams
    if "update_epochs" in hp and "num_minibatches" in hp:
        return hp.update_epochs * hp.num_minibatches, hp.get("target_kl") is None
    phases = getattr(module, "phases_per_training_step", None)
    if "gradient_steps" in hp and phases:
        return hp.gradient_steps * phases, type(module).__name__ == "DQN"
    return 1, False


def uses_lightning_default(trainer: Any) -> bool:
    """Whether ``max_epochs`` is the 1000 Lightning put in place of an unset one (an explicit 1000 looks the same)."""
    return (
        trainer.fit_loop.max_epochs == LIGHTNING_DEFAULT_MAX_EPOCHS
        and trainer.max_steps == -1
        and not any(isinstance(c, Timer) for c in trainer.callbacks)
    )


def check_budget(trainer: Any, module: Any) -> None:
    """Let ``total_timesteps`` end the run: lift Lightning's default ``max_epochs``; say when a cap set by the user wins.

    Call when fitting, once the Trainer has parsed its loop limits and before the envs exist.
    """
    total = module.hparams.total_timesteps
    batches = batches_needed(module)
    if uses_lightning_default(trainer):
        trainer.fit_loop.max_epochs = -1  # the budget stops the run (RLModule sets trainer.should_stop)
        if batches is not None and trainer.is_global_zero and batches > LIGHTNING_DEFAULT_MAX_EPOCHS * module.batches_per_epoch:
            say(f"Lightning's default max_epochs={LIGHTNING_DEFAULT_MAX_EPOCHS} does not apply: the run ends at total_timesteps={total:,} env steps.")
        return
    if batches is None or not trainer.is_global_zero:
        return
    warmup = module.hparams.get("learning_starts", 0) or 0
    per_epoch, per_env_batch = module.batches_per_epoch, module.env_steps_per_batch
    caps = []  # (env steps at which the cap stops the run, the line that says so)
    epochs, max_epochs = math.ceil(batches / per_epoch), trainer.fit_loop.max_epochs
    if max_epochs is not None and 0 <= max_epochs < epochs:
        reached = min(total, warmup + max_epochs * per_epoch * per_env_batch)
        line = (
            f"Trainer(max_epochs={max_epochs}) wins over total_timesteps={total:,}: the run stops after {max_epochs} epoch(s), at about "
            f"{reached:,} env steps, and the budget needs {epochs:,} epochs of timesteps_per_epoch={module.hparams.timesteps_per_epoch:,}; "
            "raise max_epochs, or set max_epochs=-1 to train the whole budget."
        )
        caps.append((reached, line))
    per_batch, exact = optimizer_steps_per_batch(module)
    steps = batches * per_batch
    if trainer.max_steps != -1 and trainer.max_steps < steps:
        reached = min(total, warmup + (trainer.max_steps // per_batch) * per_env_batch)
        line = (
            f"Trainer(max_steps={trainer.max_steps:,}) wins over total_timesteps={total:,}: max_steps counts optimizer steps, and the "
            f"budget takes {'' if exact else 'at least '}{steps:,} ({batches:,} training batches of {per_batch} each), so the run stops "
            f"at about {reached:,} env steps; raise max_steps, or set max_steps=-1 to train the whole budget."
        )
        caps.append((reached, line))
    if caps:
        say(min(caps)[1])  # the cap that stops the run first


def say(message: str) -> None:
    """One line on stderr, as lightrl's other run messages."""
    print(f"lightrl: {message}", file=sys.stderr, flush=True)
