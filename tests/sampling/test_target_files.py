"""Loading targets from ``builtin:NAME`` and ``FILE.py:NAME``, and probing them."""

from __future__ import annotations

import doctest
import math
import sys
from pathlib import Path

import pytest
import torch

from pushforward.sampling import target_files
from pushforward.sampling.target import CallableTarget, Target
from pushforward.sampling.target_files import load_target, probe_points, probe_target
from pushforward.sampling.targets import BUILTIN_TARGETS, GaussianGrid, builtin_target

GAUSSIAN = """
import torch

def log_density(x):
    return -0.5 * (x ** 2).sum(-1)

def log_density_helper(x):
    return x
"""

OBJECT = """
import math
import torch
from dataclasses import dataclass

@dataclass
class Box:
    features: int = 3
    low: float = -1.0
    high: float = 1.0
    log_z: float = 3 * math.log(2.0)

    def log_prob(self, x):
        return torch.zeros(x.shape[0], dtype=x.dtype)

box = Box()
"""


def write(tmp_path: Path, text: str, name: str = "target.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- builtin:NAME --------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_TARGETS)
def test_builtin_specs_load_and_pass_the_probe(name: str) -> None:
    target = load_target(f"builtin:{name}")
    assert target.name == name
    assert type(target) is type(builtin_target(name))
    for dtype in (torch.float32, torch.float64):
        values = probe_target(target, dtype)
        assert values.dtype == dtype and torch.isfinite(values).all()


def test_builtin_with_a_conflicting_features_is_an_error() -> None:
    assert load_target("builtin:grid-9", features=2).features == 2
    with pytest.raises(ValueError, match="features=2 but features=3"):
        load_target("builtin:grid-9", features=3)


def test_unknown_builtin_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'funnel-10'"):
        load_target("builtin:funnel10")


# --- FILE.py:NAME --------------------------------------------------------------------------


def test_a_function_with_features_given(tmp_path: Path) -> None:
    path = write(tmp_path, GAUSSIAN)
    target = load_target(f"{path}:log_density", features=2)
    assert isinstance(target, CallableTarget)
    assert target.features == 2 and target.name == f"{path}:log_density"
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    assert target.log_prob(x).item() == -2.5


def test_an_object_gives_its_own_features_bounds_and_log_z(tmp_path: Path) -> None:
    path = write(tmp_path, OBJECT)
    target = load_target(f"{path}:box")
    assert target.features == 3
    assert target.log_z == pytest.approx(3 * math.log(2.0))
    assert target.low is not None and torch.equal(target.low, -torch.ones(3, dtype=torch.float64))
    points = probe_points(target, torch.float64)
    assert bool(target.contains(points).all())  # probe points of a box lie in the box
    with pytest.raises(ValueError, match="features=3 but features=4"):
        load_target(f"{path}:box", features=4)


def test_a_target_instance_in_a_file_is_used_as_it_is(tmp_path: Path) -> None:
    text = (
        "from pushforward.sampling.targets import GaussianGrid\ngrid = GaussianGrid(per_side=2)\n"
    )
    target = load_target(f"{write(tmp_path, text)}:grid")
    assert isinstance(target, GaussianGrid) and target.name == "grid-4"


def test_the_file_is_not_left_in_sys_modules_and_names_do_not_clash(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write(tmp_path / "a", "def f(x):\n    return x.sum(-1)\n", "json.py")
    second = write(tmp_path / "b", "def f(x):\n    return -x.sum(-1)\n", "json.py")
    before = set(sys.modules)
    import json

    x = torch.ones(2, 3)
    assert load_target(f"{first}:f", features=3).log_prob(x).tolist() == [3.0, 3.0]
    assert load_target(f"{second}:f", features=3).log_prob(x).tolist() == [-3.0, -3.0]
    assert set(sys.modules) - before <= {"json"}
    assert sys.modules["json"] is json and hasattr(json, "dumps")


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"target file '.*nowhere\.py' does not exist"):
        load_target(f"{tmp_path / 'nowhere.py'}:f")
    with pytest.raises(FileNotFoundError, match="is a directory"):
        load_target(f"{tmp_path}:f")


def test_a_file_that_is_not_python(tmp_path: Path) -> None:
    path = write(tmp_path, "x = 1\n", "target.txt")
    with pytest.raises(ValueError, match=r"must be a Python file \(\.py\)"):
        load_target(f"{path}:x")


@pytest.mark.parametrize("spec", ["target.py", "target.py:", ":f", "builtin", "target.py:a-b"])
def test_a_spec_without_a_name(tmp_path: Path, spec: str) -> None:
    with pytest.raises(ValueError, match=r"does not name an object: write FILE\.py:NAME"):
        load_target(spec)


def test_no_such_name_suggests_the_public_callables(tmp_path: Path) -> None:
    path = write(tmp_path, GAUSSIAN)
    with pytest.raises(ValueError, match=r"has no name 'log_densty' \(did you mean 'log_density'"):
        load_target(f"{path}:log_densty", features=2)
    with pytest.raises(ValueError, match=r"it defines: log_density, log_density_helper$"):
        load_target(f"{path}:nothing", features=2)


def test_an_import_that_fails_says_where_and_what(tmp_path: Path) -> None:
    text = "import torch\n\n\ndef helper():\n    return {}['key']\n\n\nvalue = helper()\n"
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as caught:
        load_target(f"{path}:value")
    message = str(caught.value)
    assert f"importing target file '{path}' failed" in message
    assert f"{path}:5: KeyError: 'key'" in message
    assert "\n" not in message
    assert isinstance(caught.value.__cause__, KeyError)


def test_a_syntax_error_says_where(tmp_path: Path) -> None:
    path = write(tmp_path, "def f(x):\n    return x +\n")
    with pytest.raises(ValueError, match=rf"{path}:2: SyntaxError: invalid syntax"):
        load_target(f"{path}:f")


def test_a_missing_features(tmp_path: Path) -> None:
    path = write(tmp_path, GAUSSIAN)
    with pytest.raises(ValueError, match=r"does not say its dimension.*give features"):
        load_target(f"{path}:log_density")


def test_a_class_or_a_value_is_not_a_target(tmp_path: Path) -> None:
    path = write(tmp_path, OBJECT + "\nanswer = 42\n")
    with pytest.raises(ValueError, match=r"is a class; name an instance \(e\.g\. target = Box"):
        load_target(f"{path}:Box")
    with pytest.raises(ValueError, match="is a int: expected a function"):
        load_target(f"{path}:answer")


# --- probe_target --------------------------------------------------------------------------


def _probe(tmp_path: Path, body: str) -> torch.Tensor:
    path = write(tmp_path, f"import math\nimport torch\n\ndef f(x):\n    {body}\n")
    return probe_target(load_target(f"{path}:f", features=2))


def test_probe_accepts_minus_infinity(tmp_path: Path) -> None:
    values = _probe(tmp_path, "return torch.where(x[:, 0] > 0, 0.0, -math.inf).to(x.dtype)")
    assert torch.isfinite(values).any() and (values == -math.inf).any()


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("return -(x ** 2).sum(-1, keepdim=True)", r"returned shape \(4, 1\).*expected \(4,\)"),
        ("return -(x ** 2).sum()", r"returned shape \(\)"),
        ("return torch.full((x.shape[0],), math.nan)", "returned NaN"),
        ("return torch.full((x.shape[0],), math.inf)", r"returned \+inf"),
        ("return [0.0] * x.shape[0]", "returned a list, expected a tensor"),
    ],
)
def test_probe_names_the_problem(tmp_path: Path, body: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _probe(tmp_path, body)


def test_probe_reports_an_exception_inside_the_target(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"failed on a batch of shape \(4, 2\).*:5: ZeroDivisionError"
    ):
        _probe(tmp_path, "return x.sum(-1) / 0 if False else 1 / 0")


def test_probe_points_are_fixed_and_leave_the_global_rng() -> None:
    target: Target = GaussianGrid()
    state = torch.get_rng_state()
    first = probe_points(target, torch.float32)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, probe_points(target, torch.float32))
    assert first.shape == (target_files.PROBE_ROWS, 2) and first.dtype == torch.float32


def test_docstring_examples() -> None:
    result = doctest.testmod(target_files)
    assert result.failed == 0 and result.attempted > 0
