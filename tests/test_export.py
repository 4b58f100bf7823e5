"""lightrl.export and `lightrl export`: ONNX and torch.export files that act exactly as the policy does."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from gymnasium import spaces

import lightrl
from lightrl.cli import main
from conftest import SPACES_ID
from lightrl.envs.masks import ActionMask
from masked_envs import MASKED_ID, MASKED_MULTI_ID
from space_envs import DISCRETE_OBS_ID, GOAL_BOX_ID, GOAL_DICT_ID, IMAGE_DICT_ID, MULTI_BINARY_ID, MULTI_DISCRETE_ID

onnx_missing = importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None
requires_onnx = pytest.mark.skipif(onnx_missing, reason="needs onnx, onnxscript and onnxruntime (lightrl[export])")
requires_ale = pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="needs ale-py (lightrl[atari])")

SKEWED_ID = "lightrl-test/SkewedBounds-v0"


class SkewedBounds(gym.Env):
    """Box actions with bounds that are neither symmetric nor the same per dimension: the policies must scale into them."""

    observation_space = spaces.Box(-5.0, 5.0, (3,), np.float32)
    action_space = spaces.Box(np.array([-3.0, 0.0], np.float32), np.array([1.0, 5.0], np.float32))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


if SKEWED_ID not in gym.registry:
    gym.register(SKEWED_ID, entry_point=SkewedBounds, max_episode_steps=50)

CASES = {
    "ppo-discrete": lambda: lightrl.PPO("CartPole-v1"),
    "ppo-box": lambda: lightrl.PPO("Pendulum-v1"),
    "ppo-skewed-box": lambda: lightrl.PPO(SKEWED_ID),
    "a2c": lambda: lightrl.A2C("CartPole-v1"),
    "dqn": lambda: lightrl.DQN("CartPole-v1"),
    "dqn-dueling": lambda: lightrl.DQN("CartPole-v1", dueling=True),
    "sac": lambda: lightrl.SAC("Pendulum-v1"),
    "sac-skewed": lambda: lightrl.SAC(SKEWED_ID),
    "td3": lambda: lightrl.TD3("Pendulum-v1"),
    "td3-skewed": lambda: lightrl.TD3(SKEWED_ID),
    "ppo-atari-cnn": pytest.param(lambda: lightrl.PPO("ALE/Pong-v5"), marks=requires_ale),
    "dqn-atari-cnn": pytest.param(lambda: lightrl.DQN("ALE/Pong-v5", hidden_sizes=[512]), marks=requires_ale),
}


def observations(space: spaces.Box, n: int = 1000, seed: int = 0) -> torch.Tensor:
    """``n`` float32 observations: pixel values for images, wide Gaussian values for vectors (beyond the usual range)."""
    generator = torch.Generator().manual_seed(seed)
    if space.dtype == np.uint8:
        return torch.randint(0, 256, (n, *space.shape), generator=generator).float()
    return 3 * torch.randn((n, *space.shape), generator=generator)


def run_onnx(path, inputs: torch.Tensor | dict[str, torch.Tensor]) -> np.ndarray:
    """The ONNX model's actions for ``inputs`` (a tensor for the input ``obs``, or a tensor per Dict key), 250 rows at a time."""
    import onnxruntime as ort

    inputs = inputs if isinstance(inputs, dict) else {"obs": inputs}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(inputs) and [o.name for o in session.get_outputs()] == ["actions"]
    assert all(i.shape[0] == "batch" for i in session.get_inputs())  # a dynamic batch dimension
    n = len(next(iter(inputs.values())))
    return np.concatenate([session.run(["actions"], {k: v[i : i + 250].numpy() for k, v in inputs.items()})[0] for i in range(0, n, 250)])


def assert_same_actions(actions: np.ndarray, expected: np.ndarray, space: spaces.Space) -> None:
    """The exported model's actions are the policy's: equal integers (int64), or floats within 1e-5 in the bounds."""
    assert actions.shape == expected.shape
    if isinstance(space, spaces.Box):
        assert actions.dtype == np.float32
        assert np.abs(actions - expected).max() <= 1e-5
        assert (actions >= space.low).all() and (actions <= space.high).all()
        assert np.ptp(expected, axis=0).min() > 1e-3  # the actions vary in every dimension: the comparison can fail
    else:  # Discrete, MultiDiscrete and MultiBinary actions
        assert actions.dtype == np.int64
        np.testing.assert_array_equal(actions, expected)
        assert len(np.unique(actions, axis=0)) > 1  # the observations reach more than one action: the comparison can fail
        assert all(space.contains(a.astype(space.dtype)) for a in actions[:20])


@requires_onnx
def test_onnx_clips_box_actions_into_the_bounds_as_the_policy_does(tmp_path):
    """PPO's Gaussian mean is unbounded: moved outside Pendulum's [-2, 2], both the policy and the ONNX model clip it."""
    model = lightrl.PPO("Pendulum-v1")
    with torch.no_grad():
        model.policy.agent.actor[-1].bias.fill_(2.0)  # means around 2: about half of them out of bounds
    obs = observations(model.observation_space)
    with torch.no_grad():
        raw = model.policy.agent.act(obs, deterministic=True).numpy()
        expected = model.policy.act(obs).numpy()
    actions = run_onnx(lightrl.export(model, tmp_path / "policy.onnx"), obs)
    assert 0.2 < (raw > 2.0).mean() < 0.8
    assert np.abs(actions - expected).max() <= 1e-5 and actions.max() == 2.0
    np.testing.assert_allclose(actions, np.clip(raw, -2.0, 2.0), atol=1e-5)


@requires_onnx
def test_onnx_holds_a_description_of_the_spaces(tmp_path):
    import onnx

    model = lightrl.SAC(SKEWED_ID)
    meta = {p.key: p.value for p in onnx.load(str(lightrl.export(model, tmp_path / "policy.onnx"))).metadata_props}
    description = json.loads(meta["lightrl"])
    assert description["algorithm"] == "SAC" and description["env_id"] == SKEWED_ID
    assert description["observation_shape"] == [3] and description["action_space"] == repr(model.action_space)


def test_pt2_loads_and_acts_in_a_process_without_lightrl_or_lightning(tmp_path):
    model = lightrl.DQN("CartPole-v1", dueling=True)
    path = lightrl.export(model, tmp_path / "policy.pt2")
    obs = observations(model.observation_space, n=64)
    torch.save(obs, tmp_path / "obs.pt")
    script = textwrap.dedent(f"""
        import json, sys
        import torch
        extra = {{"lightrl.json": ""}}
        program = torch.export.load({str(path)!r}, extra_files=extra)
        actions = program.module()(torch.load({str(tmp_path / 'obs.pt')!r}))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("lightrl", "lightning", "pytorch_lightning"))
        print(json.dumps({{"actions": actions.tolist(), "dtype": str(actions.dtype), "loaded": loaded,
                          "algorithm": json.loads(extra["lightrl.json"])["algorithm"]}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["loaded"] == [] and out["dtype"] == "torch.int64" and out["algorithm"] == "DQN"
    with torch.no_grad():
        assert out["actions"] == model.policy.act(obs).tolist()


def test_pt2_has_a_dynamic_batch_dimension(tmp_path):
    model = lightrl.TD3(SKEWED_ID)
    program = torch.export.load(lightrl.export(model, tmp_path / "policy.pt2")).module()
    for n in (1, 7, 300):
        obs = observations(model.observation_space, n=n)
        with torch.no_grad():
            assert torch.equal(program(obs), model.policy.act(obs))


def test_export_names_an_observation_space_it_cannot_take(tmp_path):
    class TupleGreedy(lightrl.policies.Policy):  # a custom policy: the algorithms refuse Tuple observations themselves
        def act(self, obs):
            return torch.zeros(len(obs[0]), dtype=torch.int64)

    policy = TupleGreedy(spaces.Tuple([spaces.Box(-1, 1, (2,)), spaces.Discrete(3)]), spaces.Discrete(2))
    with pytest.raises(ValueError, match=r"export supports Box, Discrete, MultiDiscrete, MultiBinary and Dict observation spaces, got Tuple\("):
        lightrl.export(policy, tmp_path / "policy.pt2")
    assert not (tmp_path / "policy.pt2").exists()


def test_export_rejects_an_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"policy.onnx or policy.pt2"):
        lightrl.export(lightrl.DQN("CartPole-v1"), tmp_path / "policy.zip")


# ------------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = lightrl.DQN("CartPole-v1", total_timesteps=200, learning_starts=100, train_frequency=50, hidden_sizes=[16])
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model)
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    trainer.save_checkpoint(path)
    return path, model


@requires_onnx
def test_cli_exports_a_checkpoint(checkpoint, tmp_path, capsys):
    path, model = checkpoint
    main(["export", str(path), "--output", str(tmp_path / "policy.onnx")])
    assert "DQN policy for CartPole-v1 written to" in capsys.readouterr().out
    obs = observations(model.observation_space, n=100)
    with torch.no_grad():
        np.testing.assert_array_equal(run_onnx(tmp_path / "policy.onnx", obs), model.policy.act(obs).numpy())


def bad_export(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_cli_rejects_a_missing_checkpoint(tmp_path, capsys):
    err = bad_export([str(tmp_path / "none.ckpt"), "--output", str(tmp_path / "policy.pt2")], capsys)
    assert "none.ckpt' does not exist" in err


def test_cli_rejects_a_corrupt_checkpoint(tmp_path, capsys):
    (tmp_path / "corrupt.ckpt").write_bytes(b"not a checkpoint at all")
    err = bad_export([str(tmp_path / "corrupt.ckpt"), "--output", str(tmp_path / "policy.pt2")], capsys)
    assert "cannot be read" in err


def test_cli_rejects_a_checkpoint_not_written_by_lightrl(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "other.ckpt")
    err = bad_export([str(tmp_path / "other.ckpt"), "--output", str(tmp_path / "policy.pt2")], capsys)
    assert "not written by a lightrl algorithm" in err


@pytest.mark.parametrize("output, message", [
    ("missing-folder/policy.onnx", "does not exist or is not writable"),
    ("policy.tflite", "must end in .onnx or .pt2"),
    (".", "must end in"),
])  # fmt: skip
def test_cli_rejects_an_output_it_cannot_write(checkpoint, tmp_path, capsys, output, message):
    err = bad_export([str(checkpoint[0]), "--output", str(tmp_path / output)], capsys)
    assert message in err


def test_cli_rejects_an_output_under_a_file(checkpoint, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    err = bad_export([str(checkpoint[0]), "--output", str(tmp_path / "file" / "policy.pt2")], capsys)
    assert "cannot be written" in err


def test_cli_export_needs_an_output(checkpoint, capsys):
    err = bad_export([str(checkpoint[0])], capsys)
    assert "--output" in err


# ------------------------------------------------------------------------------------------ every space


SPACE_CASES = {
    "ppo-dict-with-discrete-part": lambda: lightrl.PPO(GOAL_DICT_ID),
    "ppo-dict-image-and-vector": lambda: lightrl.PPO(IMAGE_DICT_ID),
    "dqn-dict": lambda: lightrl.DQN(GOAL_DICT_ID),
    "dqn-dict-image-and-vector": lambda: lightrl.DQN(IMAGE_DICT_ID),
    "ppo-discrete-obs": lambda: lightrl.PPO(DISCRETE_OBS_ID),
    "dqn-discrete-obs": lambda: lightrl.DQN(DISCRETE_OBS_ID),
    "ppo-multi-discrete": lambda: lightrl.PPO(MULTI_DISCRETE_ID),
    "a2c-multi-binary": lambda: lightrl.A2C(MULTI_BINARY_ID),
    "sac-dict": lambda: lightrl.SAC(GOAL_BOX_ID),
    "td3-dict": lambda: lightrl.TD3(GOAL_BOX_ID),
    "dqn-multi-discrete-obs": lambda: lightrl.DQN(SPACES_ID, env_kwargs={
        "observation_space": spaces.MultiDiscrete([4, 5, 6], start=[0, -2, 1]), "action_space": spaces.Discrete(3)}),
    "ppo-multi-binary-obs": lambda: lightrl.PPO(SPACES_ID, env_kwargs={
        "observation_space": spaces.MultiBinary(8), "action_space": spaces.MultiDiscrete([3, 3])}),
    # Action masks: one more input, "action_mask" (bool).
    "ppo-masked": lambda: lightrl.PPO(MASKED_ID),
    "ppo-masked-dict-obs": lambda: lightrl.PPO(MASKED_ID, env_kwargs={"mask_in": "obs"}),
    "ppo-masked-multi-discrete": lambda: lightrl.PPO(MASKED_MULTI_ID),
    "dqn-masked": lambda: lightrl.DQN(MASKED_ID),
    "a2c-masked-taxi": lambda: lightrl.A2C("Taxi-v4" if "Taxi-v4" in gym.registry else "Taxi-v3"),
}


def space_observations(space: spaces.Space, n: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """The exported inputs, by name: ``obs``, or a Dict's keys; int64 indices for Discrete and MultiDiscrete spaces."""
    def part(sub: spaces.Space, offset: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed + offset)
        if isinstance(sub, ActionMask):  # random masks with a valid value in every group
            mask = torch.rand((n, *sub.shape), generator=generator) < 0.5
            first = torch.cumsum(torch.tensor([0, *sub.groups[:-1]]), 0)
            mask[:, first + (torch.rand((n, len(sub.groups)), generator=generator) * torch.tensor(sub.groups)).long()] = True
            return mask
        if isinstance(sub, spaces.Discrete):
            return torch.randint(int(sub.n), (n,), generator=generator) + int(sub.start)
        if isinstance(sub, spaces.MultiDiscrete):
            nvec, start = torch.as_tensor(sub.nvec), torch.as_tensor(sub.start)
            return (torch.rand((n, *sub.shape), generator=generator) * nvec).long() + start
        if isinstance(sub, spaces.MultiBinary):
            return torch.randint(2, (n, *sub.shape), generator=generator).float()
        return observations(sub, n, seed + offset)

    if isinstance(space, spaces.Dict):
        return {key: part(sub, i) for i, (key, sub) in enumerate(space.spaces.items())}
    return {"obs": part(space, 0)}


def policy_input(space: spaces.Space, inputs: dict[str, torch.Tensor]):
    return inputs if isinstance(space, spaces.Dict) else inputs["obs"]


@requires_onnx
@pytest.mark.parametrize("make", [*CASES.values(), *SPACE_CASES.values()], ids=[*CASES, *SPACE_CASES])
def test_onnx_acts_as_the_policy_over_1000_observations(make, tmp_path):
    torch.manual_seed(0)
    model = make()
    policy = model.policy
    if not isinstance(policy.action_space, spaces.Box) and not isinstance(policy.observation_space, spaces.Box):
        with torch.no_grad():  # fresh networks can be nearly constant; perturbed ones pick more than one action
            for p in policy.parameters():
                p.add_(0.3 * torch.randn_like(p))
    inputs = space_observations(policy.observation_space)
    obs = policy_input(policy.observation_space, inputs)
    with torch.no_grad():
        expected = policy.act(obs).numpy()
    actions = run_onnx(lightrl.export(model, tmp_path / "policy.onnx"), obs)  # one input per Dict key, named after it
    assert_same_actions(actions, expected, policy.action_space)
    if "action_mask" in inputs:  # and never an action the mask forbids
        groups = policy.observation_space["action_mask"].groups
        offsets = np.cumsum([0, *groups[:-1]])
        chosen = offsets + actions.reshape(len(actions), -1)
        assert np.take_along_axis(inputs["action_mask"].numpy(), chosen, axis=1).all()


def test_pt2_takes_a_dict_of_observations_and_describes_its_inputs(tmp_path):
    model = lightrl.PPO(GOAL_DICT_ID)
    path = lightrl.export(model, tmp_path / "policy.pt2")
    extra = {"lightrl.json": ""}
    program = torch.export.load(path, extra_files=extra).module()
    meta = json.loads(extra["lightrl.json"])
    assert meta["inputs"] == ["goal", "position"] and meta["observation_shape"] is None
    assert meta["input_shapes"] == {"goal": [], "position": [1]} and meta["input_dtypes"] == {"goal": "int64", "position": "float32"}
    for n in (1, 5):
        obs = space_observations(model.observation_space, n=n)
        with torch.no_grad():
            assert torch.equal(program(obs), model.policy.act(obs))


def test_pt2_takes_the_action_mask_as_a_named_input_and_never_acts_against_it(tmp_path):
    model = lightrl.DQN(MASKED_ID)
    with torch.no_grad():
        for p in model.q_network.parameters():
            p.add_(torch.randn_like(p))
    path = lightrl.export(model, tmp_path / "policy.pt2")
    extra = {"lightrl.json": ""}
    program = torch.export.load(path, extra_files=extra).module()
    meta = json.loads(extra["lightrl.json"])
    assert meta["inputs"] == ["action_mask", "obs"] and meta["action_mask"] == "info"
    assert meta["input_shapes"] == {"action_mask": [6], "obs": [6]} and meta["input_dtypes"] == {"action_mask": "bool", "obs": "float32"}
    inputs = space_observations(model.observation_space, n=500)
    actions = program(inputs)
    with torch.no_grad():
        assert torch.equal(actions, model.policy.act(inputs))
    assert inputs["action_mask"][torch.arange(500), actions].all()
    assert json.loads(json.dumps(lightrl.deploy.description(lightrl.PPO("CartPole-v1"), lightrl.PPO("CartPole-v1").policy)))["action_mask"] is None
