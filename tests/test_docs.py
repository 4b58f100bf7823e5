"""The documentation site: the API reference covers every public name, and every example on it runs.

Examples: every ```python and ```bash block in docs/ runs, unless the comment line just before it says
otherwise (the comment is invisible on the site):

- ``<!-- docs-test: skip (reason) -->``: not run; the reason says why (a GPU, a cluster, an account).
- ``<!-- docs-test: slow -->``: run by ``make test-slow`` only.
- ``<!-- docs-test: fails -->``: a single ``lightrl`` command that must exit with status 2 and print the
  lines of the ```text block that follows it on stderr.

A python block runs as a script; a bash block runs as a bash script (``set -eu``). Both run in a
temporary directory that links ``experiments/`` and ``docs/`` from the repository, with W&B offline and
one torch thread. To keep the suite fast, ``total_timesteps=N`` in python blocks becomes at most
``BUDGET``, and ``--model.total_timesteps BUDGET`` is appended to every ``lightrl fit`` command (unless
it already asks for fewer).
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import shlex
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import lightrl
from lightrl.cli import main

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
SWEEP = ROOT / "experiments" / "sweep_ppo_cartpole.yaml"
BUDGET = 1024

# ------------------------------------------------------------------------------------ API reference


def lightrl_modules() -> list[str]:
    """``lightrl`` and every module and package under it."""
    return ["lightrl"] + [info.name for info in pkgutil.walk_packages(lightrl.__path__, "lightrl.")]


def docstring_of_method(cls: type, name: str, func) -> str:
    """The method's own docstring or, for an override, the docstring of the method it overrides."""
    if (func.__doc__ or "").strip():
        return func.__doc__
    for base in cls.__mro__[1:]:
        member = vars(base).get(name)
        if member is not None:
            member = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            if (getattr(member, "__doc__", None) or "").strip():
                return member.__doc__
    return ""


def public_api(module: types.ModuleType) -> dict[str, str]:
    """Docstrings of the public classes and functions defined in ``module``, and of their public methods.

    Methods include properties, class and static methods. An override of a documented method (a Lightning
    hook, ``nn.Module.forward``) counts as documented by it, as ``inspect.getdoc`` and ``help()`` have it.
    """
    api: dict[str, str] = {}
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if obj.__module__ != module.__name__:  # imported, documented where it is defined
            continue
        api[f"{module.__name__}.{name}"] = obj.__doc__ or ""
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                func = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                if not attr.startswith("_") and inspect.isfunction(func):
                    api[f"{module.__name__}.{name}.{attr}"] = docstring_of_method(obj, attr, func)
    return api


def undocumented(module: types.ModuleType) -> list[str]:
    """The public names of ``module`` without a docstring."""
    return [name for name, doc in public_api(module).items() if not doc.strip()]


def api_directives() -> dict[str, dict]:
    """``::: module`` directives of the API reference pages, with their ``options``."""
    directives = {}
    for page in sorted((DOCS / "api").glob("*.md")):
        for match in re.finditer(r"^::: (\S+)\n((?:[ \t]+\S.*\n|[ \t]*\n)*)", page.read_text(), re.M):
            config = yaml.safe_load(textwrap.dedent(match.group(2))) or {}
            directives[match.group(1)] = config.get("options", {})
    return directives


def test_every_public_class_and_function_has_a_docstring():
    missing = [name for module in lightrl_modules() for name in undocumented(importlib.import_module(module))]
    assert missing == [], f"add a Google-style docstring to: {missing}"


def test_every_module_is_in_the_api_reference():
    directives = api_directives()
    modules = lightrl_modules()
    assert sorted(set(modules) - set(directives)) == [], "add a `::: module` directive to a page in docs/api/"
    assert sorted(set(directives) - set(modules)) == [], "a directive in docs/api/ names a module that does not exist"
    for module in modules:
        options = directives[module]
        depth = module.count(".") + 1
        defined = {name.rsplit(".", 1)[1] for name in public_api(importlib.import_module(module)) if name.count(".") == depth}
        # Without options the handler renders every documented public member. A package that re-exports its
        # submodules' names lists its own (or `members: false` if it has none), so that they render once.
        members = options.get("members", True)
        assert "filters" not in options, module
        assert members is True or defined <= set(members or []), f"{module}: list {sorted(defined)} in its `members`"


def test_docstring_check_reports_what_is_missing():
    module = types.ModuleType("fake_module")
    exec(
        textwrap.dedent('''
            class Base:
                def hook(self):
                    """Documented here."""

            class Algo(Base):
                """Documented."""

                def hook(self):  # documented by Base.hook
                    pass

                def method(self):
                    pass

                @property
                def value(self):
                    return 1

                def _private(self):
                    pass

            def function():
                pass

            def _helper():
                pass
        '''),
        module.__dict__,
    )
    assert undocumented(module) == ["fake_module.Base", "fake_module.Algo.method", "fake_module.Algo.value", "fake_module.function"]


# ------------------------------------------------------------------------------------------ examples


@dataclass
class Block:
    """A fenced code block of a docs page, with its marker and, for ``fails``, the expected output."""

    page: str
    line: int
    lang: str
    code: str
    marker: str = ""
    expected: str = ""

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*$")
MARKER = re.compile(r"^<!-- docs-test: (?P<marker>.*) -->$")
RUNNABLE = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}


def expand_snippets(code: str) -> str:
    """Inline ``--8<-- "path"`` lines (pymdownx.snippets, paths from the repository root)."""
    return re.sub(r'^--8<-- "([^"]+)"$', lambda m: (ROOT / m.group(1)).read_text(), code, flags=re.M)


def page_blocks(page: Path, docs: Path = DOCS) -> list[Block]:
    """The fenced code blocks of one page, in order."""
    lines = page.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, start = fence["indent"], i
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        body = "\n".join(line[len(indent):] for line in lines[start + 1 : i]) + "\n"
        previous = next((line.strip() for line in reversed(lines[:start]) if line.strip()), "")
        marker = MARKER.match(previous)
        blocks.append(Block(str(page.relative_to(docs)), start + 1, fence["lang"], body, marker["marker"] if marker else ""))
        i += 1
    return blocks


def doc_examples(docs: Path = DOCS) -> list[Block]:
    """The runnable blocks of every page; raises on a marker this module does not know, or out of place."""
    examples = []
    for page in sorted(docs.rglob("*.md")):
        blocks = page_blocks(page, docs)
        for block, after in zip(blocks, blocks[1:] + [None]):
            if block.lang not in RUNNABLE:
                assert not block.marker, f"{block.id}: a docs-test marker before a ```{block.lang} block"
                continue
            block.lang = RUNNABLE[block.lang]
            block.code = expand_snippets(block.code)
            if block.marker == "fails":
                assert after is not None and after.lang == "text", f"{block.id}: `fails` needs a ```text block after it"
                block.expected = after.code
            elif block.marker not in ("", "slow") and not re.fullmatch(r"skip \(.+\)", block.marker):
                raise AssertionError(f"{block.id}: unknown marker {block.marker!r}")
            examples.append(block)
    return examples


def example_params(kind: str) -> list:
    params = []
    for block in doc_examples():
        if (block.marker == "fails") != (kind == "fails"):
            continue
        marks = [pytest.mark.slow] if block.marker == "slow" else []
        if block.marker.startswith("skip"):
            marks = [pytest.mark.skip(reason=block.marker[len("skip ("):-1])]
        params.append(pytest.param(block, id=block.id, marks=marks))
    return params


def with_small_budget(block: Block) -> str:
    """The block's code with at most ``BUDGET`` env steps per training run."""
    if block.lang == "python":
        return re.sub(r"(total_timesteps\s*=\s*)([\d_]+)", lambda m: f"{m[1]}{min(int(m[2]), BUDGET)}", block.code)
    lines = []
    for line in re.sub(r"\s*\\\n\s*", " ", block.code).splitlines():  # one line per command
        comment = re.search(r"\s#(\s|$)", line)
        command = (line[: comment.start()] if comment else line).rstrip()
        if re.search(r"(^|[\s;&|(])lightrl\s+fit\b", command):
            asked = re.search(r"--model\.total_timesteps[ =](\d+)", command)
            command += f" --model.total_timesteps {min(int(asked[1]), BUDGET) if asked else BUDGET}"
        lines.append(command)
    return "\n".join(lines) + "\n"


def example_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}
    bin_dir = str(Path(sys.executable).parent)  # `lightrl` and `python` of this environment
    return {**env, "PATH": bin_dir + os.pathsep + env["PATH"], "HOME": str(home), "WANDB_MODE": "offline",
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("block", example_params("runs"))
def test_doc_example_runs(block: Block, tmp_path: Path):
    for name in ("experiments", "docs"):
        (tmp_path / name).symlink_to(ROOT / name)
    script = tmp_path / ("example.py" if block.lang == "python" else "example.sh")
    script.write_text(with_small_budget(block))
    command = [sys.executable, script.name] if block.lang == "python" else ["bash", "-eu", script.name]
    proc = subprocess.run(command, cwd=tmp_path, env=example_env(tmp_path), capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, f"{block.id} failed:\n{script.read_text()}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.mark.parametrize("block", example_params("fails"))
def test_doc_error_example_prints_its_error(block: Block, tmp_path, monkeypatch, capsys):
    args = shlex.split(block.code)
    assert args[0] == "lightrl" and "\n" not in block.code.strip(), f"{block.id}: `fails` takes one lightrl command"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(SystemExit) as exit_info:
        main(args[1:])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    for line in block.expected.strip().splitlines():
        assert line in err, f"{block.id}: the page shows {line!r}, the command printed {err!r}"


def test_examples_follow_the_convention(tmp_path):
    pages = {block.page for block in doc_examples() if not block.marker.startswith("skip")}
    assert pages >= {"quickstart.md", "concepts.md", "custom-algorithm.md", "scaling.md", "wandb.md", "troubleshooting.md"}
    page = tmp_path / "page.md"
    for text, error in [
        ("<!-- docs-test: later -->\n```bash\nls\n```\n", "unknown marker"),
        ("<!-- docs-test: skip -->\n```bash\nls\n```\n", "unknown marker"),  # a skip needs its reason
        ("<!-- docs-test: slow -->\n```text\nout\n```\n", "marker before a ```text block"),
        ("<!-- docs-test: fails -->\n```bash\nlightrl fit\n```\n", "needs a ```text block"),
    ]:
        page.write_text(text)
        with pytest.raises(AssertionError, match=re.escape(error)):
            doc_examples(tmp_path)


def test_budget_is_capped_in_python_and_appended_to_lightrl_fit():
    python = Block("p.md", 1, "python", "m = PPO(total_timesteps=50_000)\nn = PPO(total_timesteps=512)\n")
    assert with_small_budget(python) == f"m = PPO(total_timesteps={BUDGET})\nn = PPO(total_timesteps=512)\n"
    bash = Block("b.md", 1, "bash", "X=1 lightrl fit --config c.yaml \\\n  --model.seed 2  # comment\nlightrl evaluate a.ckpt\n"
                                    "lightrl fit --model.total_timesteps 100\n")
    assert with_small_budget(bash) == (f"X=1 lightrl fit --config c.yaml --model.seed 2 --model.total_timesteps {BUDGET}\n"
                                       "lightrl evaluate a.ckpt\nlightrl fit --model.total_timesteps 100 --model.total_timesteps 100\n")


# --------------------------------------------------------------------------------------------- sweep


def sweep_command(sweep: dict, values: dict) -> list[str]:
    """The command a W&B agent runs for one trial, with its macros expanded as the agent does."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    macros = create_sweep_command_args({"args": {name: {"value": value} for name, value in values.items()}})
    macros.update(env=["/usr/bin/env"], interpreter=["python"], program=[sweep["program"]])
    command = []
    for item in sweep["command"]:
        command += macros[item[2:-1]] if item.startswith("${") else [item]
    return command


def test_sweep_parameters_are_accepted_by_lightrl_fit(monkeypatch, capsys):
    sweep = yaml.safe_load(SWEEP.read_text())
    candidates = {  # every listed value, or both ends of a range
        name: spec["values"] if "values" in spec else [spec["value"]] if "value" in spec else [spec["min"], spec["max"]]
        for name, spec in sweep["parameters"].items()
    }
    assert candidates and all(name.startswith("model.") for name in candidates)
    monkeypatch.chdir(ROOT)  # the agent runs from the repository root
    first = {name: values[0] for name, values in candidates.items()}
    trials = [first] + [{**first, name: value} for name, values in candidates.items() for value in values[1:]]
    for trial in trials:
        command = sweep_command(sweep, trial)
        assert command[:3] == ["/usr/bin/env", "lightrl", "fit"], command
        with pytest.raises(SystemExit) as exit_info:
            main([*command[2:], "--print_config"])  # parses and validates every flag, trains nothing
        assert exit_info.value.code == 0, capsys.readouterr().err
        model = yaml.safe_load(capsys.readouterr().out)["model"]
        assert {name: model["init_args"][name.removeprefix("model.")] for name in trial} == trial
        module_name, _, class_name = model["class_path"].rpartition(".")
        getattr(importlib.import_module(module_name), class_name)(**model["init_args"])  # __init__'s checks pass
