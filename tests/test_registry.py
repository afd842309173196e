"""The registry: a registered builder records ``config`` however it is called."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import pushforward
from pushforward import registry
from pushforward.flows.flow import Flow
from pushforward.model import Model
from pushforward.registry import build, keywords, register
from tests.contract import randomize_


@pytest.fixture
def scratch_registry():
    """Registrations made by a test are undone after it, so the model sweep never sees them."""
    saved = (dict(registry._BUILDERS), dict(registry._TRAIN_DEFAULTS), dict(registry._CLASS_NAMES))
    yield
    for table, before in zip(
        (registry._BUILDERS, registry._TRAIN_DEFAULTS, registry._CLASS_NAMES), saved, strict=True
    ):
        table.clear()
        table.update(before)


def test_a_directly_built_flow_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = pushforward.flows.nsf(features=2, transforms=2, hidden=(8,), bins=4)
    randomize_(model, 0.2, torch.Generator().manual_seed(1))
    assert model.config == {
        "model": "nsf",
        "options": build("nsf", features=2, transforms=2, hidden=[8], bins=4).config["options"],
    }
    pushforward.save(model, tmp_path)
    loaded = pushforward.load(tmp_path)
    x = torch.randn(16, 2)
    standard = -0.5 * x.square().sum(1) - math.log(2 * math.pi)
    assert (model.log_prob(x) - standard).abs().max() > 1e-3  # not the identity flow
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x), rtol=0, atol=0)


def test_build_and_a_direct_call_store_the_same_config():
    options = {"features": 3, "context": 2, "transforms": 1, "hidden": [4]}
    built = build("maf", **options)
    direct = pushforward.flows.maf(**options)
    positional = pushforward.flows.maf(3, 2, 1, [4])
    assert built.config == direct.config == positional.config
    # Defaults included, values JSON-ready (tuples become lists).
    assert built.config["options"]["hidden"] == [4]
    assert built.config["options"]["base"] == "normal"
    assert set(built.config["options"]) == set(keywords("maf"))


def test_a_wrapped_function_keeps_its_name_docstring_and_signature():
    nsf = pushforward.flows.nsf
    assert nsf.__name__ == "nsf" and "spline" in (nsf.__doc__ or "")
    assert list(inspect.signature(nsf).parameters)[:3] == ["features", "context", "transforms"]
    with pytest.raises(TypeError, match="binz"):
        nsf(features=2, binz=4)  # type: ignore[call-arg]


def test_a_direct_call_refuses_options_a_config_cannot_hold():
    with pytest.raises(TypeError, match="plain values"):
        pushforward.flows.nsf(features=2, hidden=torch.tensor([8]))  # type: ignore[arg-type]


class _Gaussian(Model):
    """A unit Gaussian with a learnable mean: the smallest registrable class."""

    def __init__(self, features: int, scale: float = 1.0) -> None:
        super().__init__()
        self.event_shape = (int(features),)
        self.context_features = 0
        self.scale = float(scale)
        self.mean = torch.nn.Parameter(torch.zeros(int(features)))

    def _log_prob(self, x, context, options):
        z = (x - self.mean) / self.scale
        return (-0.5 * z.square() - math.log(self.scale * math.sqrt(2 * math.pi))).sum(1)

    def _rsample_and_log_prob(self, n, context, options, log_prob_options):
        x = self.mean + self.scale * torch.randn(n, self.features, dtype=self.mean.dtype)
        return x, None if log_prob_options is None else self._log_prob(x, context, options)


def test_a_registered_class_stays_a_class(scratch_registry, tmp_path):
    registered = register("test-gaussian")(_Gaussian)
    assert registered is _Gaussian
    assert keywords("test-gaussian") == ["features", "scale"]
    direct = _Gaussian(2, scale=0.5)
    assert isinstance(direct, _Gaussian) and isinstance(direct, Model)
    built = build("test-gaussian", features=2, scale=0.5)
    assert type(built) is _Gaussian
    assert (
        direct.config
        == built.config
        == {
            "model": "test-gaussian",
            "options": {"features": 2, "scale": 0.5},
        }
    )
    with torch.no_grad():
        direct.mean.fill_(0.3)
    pushforward.save(direct, tmp_path)
    x = torch.randn(5, 2)
    torch.testing.assert_close(pushforward.load(tmp_path).log_prob(x), direct.log_prob(x))

    class Shifted(_Gaussian):
        def __init__(self, features: int) -> None:
            super().__init__(features, scale=2.0)

    # A subclass is a subclass; registered under no name, it has no config to save.
    shifted = Shifted(3)
    assert isinstance(shifted, _Gaussian) and shifted.scale == 2.0
    assert not hasattr(shifted, "config")
    with pytest.raises(ValueError, match="cannot be rebuilt"):
        pushforward.save(shifted, tmp_path / "shifted")
    register("test-shifted")(Shifted)
    assert Shifted(3).config == {"model": "test-shifted", "options": {"features": 3}}


def test_names_are_registered_once(scratch_registry):
    register("test-gaussian")(_Gaussian)
    with pytest.raises(ValueError, match="already registered"):
        register("test-gaussian")(Flow)
    with pytest.raises(ValueError, match="already registered as 'test-gaussian'"):
        register("test-gaussian-2")(_Gaussian)
    # Registering the registered builder again under its own name changes nothing.
    builder = registry.builder_for("nsf")
    assert register("nsf")(builder) is builder
