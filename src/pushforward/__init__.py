"""pushforward: flow-based generative modelling on PyTorch behind one protocol.

Every model is a pushforward of a simple base distribution and answers the same
three questions: ``log_prob``, ``sample`` and ``loss``.
"""

from __future__ import annotations

from pushforward import fewstep, flows, matching, recipes, sampling
from pushforward._version import __version__
from pushforward.flows import Flow
from pushforward.matching import FlowMatching
from pushforward.model import Model
from pushforward.recipes.run import distill_run, reflow_run
from pushforward.registry import available, build, register
from pushforward.serialization import load, save
from pushforward.train import fit
from pushforward.train.config import TrainingConfig
from pushforward.train.run import RunResult, train_run
from pushforward.train.target_run import train_target_run
from pushforward.transforms.preprocessing import Preprocessing

__all__ = [
    "Flow",
    "FlowMatching",
    "Model",
    "Preprocessing",
    "RunResult",
    "TrainingConfig",
    "__version__",
    "available",
    "build",
    "distill_run",
    "fewstep",
    "fit",
    "flows",
    "load",
    "matching",
    "recipes",
    "reflow_run",
    "register",
    "sampling",
    "save",
    "train_run",
    "train_target_run",
]
