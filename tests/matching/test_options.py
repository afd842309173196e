"""The flow-matching family's option groups: flat signatures as recorded, defaults, docs."""

from __future__ import annotations

import dataclasses
import doctest
import inspect

import pytest

import pushforward
from pushforward.fewstep.meanflow import MeanFlowLikelihoodOptions
from pushforward.matching import options as matching_options
from pushforward.matching.options import (
    LikelihoodOptions,
    NetworkOptions,
    TwoTimeNetworkOptions,
)
from pushforward.registry import builder_for

_NETWORK_HEAD = [
    ("hidden", "Sequence[int]", (256, 256, 256, 256)),
    ("shape", "Sequence[int] | None", None),
    ("base", "str", "normal"),
]
_NETWORK_TAIL = [
    ("residual", "bool", True),
    ("time_embedding", "int", 32),
    ("time_scale", "float", 10.0),
    ("activation", "str", "silu"),
]
_TOLERANCES = [
    ("atol", "float", 1e-5),
    ("rtol", "float", 1e-5),
    ("divergence", "str | None", None),
    ("probes", "int", 1),
]
_SIZES = [("features", "int", inspect.Parameter.empty), ("context", "int", 0)]

# The signatures of the five builders as they were before their options were grouped:
# configs, --set and saved model.json files name these options in this order.
RECORDED = {
    "fm": (
        "FlowMatching",
        [
            *_SIZES,
            *_NETWORK_HEAD,
            ("path", "str", "cond-ot"),
            ("sigma_min", "float", 0.0),
            ("coupling", "str", "ot"),
            ("parameterization", "str", "velocity"),
            ("time_sampling", "str", "uniform"),
            ("time_options", "dict[str, float] | None", None),
            ("loss", "str", "mse"),
            ("loss_weighting", "str", "none"),
            *_NETWORK_TAIL,
            ("context_dropout", "float", 0.0),
            ("solver", "str", "rk4"),
            ("steps", "int", 20),
            ("likelihood_solver", "str", "dopri5"),
            *_TOLERANCES,
            ("source_rows", "int", 0),
        ],
    ),
    "meanflow": (
        "MeanFlow",
        [
            *_SIZES,
            *_NETWORK_HEAD,
            ("coupling", "str", "ot"),
            *_NETWORK_TAIL,
            ("time_mean", "float", 0.4),
            ("time_std", "float", 2.0),
            ("equal_time_fraction", "float", 0.5),
            ("adaptive_p", "float", 0.0),
            ("adaptive_c", "float", 1e-3),
            ("steps", "int", 1),
            ("likelihood_solver", "str", "dopri5"),
            ("likelihood_steps", "int", 20),
            *_TOLERANCES,
        ],
    ),
    "shortcut": (
        "ShortcutModel",
        [
            *_SIZES,
            *_NETWORK_HEAD,
            ("coupling", "str", "ot"),
            *_NETWORK_TAIL,
            ("step_sizes", "str", "dyadic"),
            ("max_steps", "int", 128),
            ("consistency_fraction", "float", 0.25),
            ("target_ema", "float", 0.0),
            ("steps", "int", 1),
            ("likelihood_solver", "str", "dopri5"),
            *_TOLERANCES,
        ],
    ),
    "consistency-fm": (
        "ConsistencyFlowMatching",
        [
            *_SIZES,
            *_NETWORK_HEAD,
            ("coupling", "str", "ot"),
            *_NETWORK_TAIL,
            ("segments", "int", 2),
            ("delta_t", "float", 1e-3),
            ("alpha", "float", 1e-5),
            ("boundary", "float", 1.0),
            ("target_ema", "float", 0.0),
            ("steps", "int | None", None),
        ],
    ),
    "distilled": (
        "DistilledFlow",
        [
            *_SIZES,
            *_NETWORK_HEAD,
            *_NETWORK_TAIL,
            ("presence_flag", "bool", False),
            ("loss", "str", "mse"),
            ("source_rows", "int", 0),
        ],
    ),
}

GROUPS = {
    "fm": (NetworkOptions, LikelihoodOptions),
    "meanflow": (TwoTimeNetworkOptions, MeanFlowLikelihoodOptions),
    "shortcut": (TwoTimeNetworkOptions, LikelihoodOptions),
    "consistency-fm": (NetworkOptions,),
    "distilled": (NetworkOptions,),
}


def _recorded_signature(name: str) -> inspect.Signature:
    returns, parameters = RECORDED[name]
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature(
        [inspect.Parameter(key, kind, default=d, annotation=a) for key, a, d in parameters],
        return_annotation=returns,
    )


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_signature_is_flat_and_as_recorded(name):
    signature = inspect.signature(builder_for(name))
    assert signature == _recorded_signature(name)
    # Equality of signatures does not see the order of keyword-only parameters; the
    # order of the saved options does, so compare the names in order too.
    assert list(signature.parameters) == [key for key, _, _ in RECORDED[name][1]]


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_resolved_options_are_the_recorded_defaults(name):
    model = pushforward.build(name, features=2, hidden=[8, 8])
    recorded = {
        key: list(default) if isinstance(default, tuple) else default
        for key, _, default in RECORDED[name][1]
        if default is not inspect.Parameter.empty
    }
    expected = {"features": 2, **recorded, "hidden": [8, 8]}
    assert model.config == {"model": name, "options": expected}
    assert list(model.config["options"]) == [key for key, _, _ in RECORDED[name][1]]


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_every_option_is_documented_once(name):
    doc = inspect.getdoc(builder_for(name)) or ""
    args = doc[doc.index("\nArgs:\n") :]
    for group in GROUPS[name]:
        for key, line in group.option_docs().items():
            assert line, f"{group.__name__}.{key} has no documentation"
            assert args.count(f"\n    {key}: ") == 1, key
            assert line.split()[0] in args
    documented = [
        entry.split(":")[0]
        for entry in args.splitlines()
        if entry.startswith("    ") and not entry.startswith("     ")
    ]
    names = [key.strip() for entry in documented for key in entry.split(",")]
    assert names == list(inspect.signature(builder_for(name)).parameters)


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_unknown_option_names_the_closest(name):
    with pytest.raises(ValueError, match=r"unknown option 'hiden'.*did you mean 'hidden'"):
        pushforward.build(name, features=2, hiden=[8])


def test_a_direct_call_of_a_builder_takes_the_flat_options():
    model = pushforward.matching.flow_matching(2, 0, [8, 8], time_embedding=4)
    assert model.config["options"]["hidden"] == [8, 8]
    assert model.config["options"]["time_embedding"] == 4
    assert model.network.hidden == (8, 8)


def test_group_defaults_are_the_builders_defaults():
    network = {f.name: f.default for f in dataclasses.fields(NetworkOptions)}
    assert network == {key: default for key, _, default in _NETWORK_HEAD + _NETWORK_TAIL}
    likelihood = {f.name: f.default for f in dataclasses.fields(LikelihoodOptions)}
    assert likelihood == {"likelihood_solver": "dopri5"} | {
        key: default for key, _, default in _TOLERANCES
    }


def test_likelihood_options_are_checked_against_the_solvers():
    with pytest.raises(ValueError, match="option 'likelihood_solver' must be one of"):
        LikelihoodOptions(likelihood_solver="rk45").model_options(2)
    with pytest.raises(ValueError, match="option 'likelihood_solver' must be one of"):
        pushforward.build("shortcut", features=2, likelihood_solver="rk45")
    assert LikelihoodOptions().model_options(65)["divergence"] == "hutchinson"


def test_two_time_networks_need_two_embedding_columns():
    with pytest.raises(ValueError, match="option 'time_embedding' must be an integer >= 2"):
        pushforward.build("meanflow", features=2, time_embedding=1)
    assert pushforward.build("fm", features=2, hidden=[8], time_embedding=0) is not None


def test_the_examples_in_the_docstrings_run():
    result = doctest.testmod(matching_options)
    assert result.attempted > 0
    assert result.failed == 0
