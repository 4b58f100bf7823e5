"""What a quiet screen means, for the subprocess tests of the `lightrl` command: the dependencies' messages that
said nothing about the run are gone, and a warning of the user's own still shows."""

from __future__ import annotations

NOISY_PY = '''
import warnings

import gymnasium as gym


class Noisy(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        warnings.warn("noisy.Noisy: a warning of the user's own", UserWarning)
'''
NOISY = ["--model.env_wrappers", '[{"class_path": "noisy.Noisy"}]']
#: The messages that said nothing about the run (issue 28), each from one dependency.
SPURIOUS = ("The dirpath has changed", "will override existing callbacks", "`weights_only` was not set", "LeafSpec",
            "No complete tensor found", "all_gather is deprecated", "exists and is not empty",
            "callbacks used to create the checkpoint need to be provided")  # fmt: skip
