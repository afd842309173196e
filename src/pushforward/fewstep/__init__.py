"""One- and few-step generators built on flow-matching primitives: MeanFlow, shortcut
models, consistency flow matching, and the one-step ``distilled`` map."""

from __future__ import annotations

from pushforward.fewstep.consistency import ConsistencyFlowMatching, consistency_flow_matching
from pushforward.fewstep.distilled import DistilledFlow, distilled
from pushforward.fewstep.meanflow import MeanFlow, meanflow
from pushforward.fewstep.shortcut import ShortcutModel, shortcut
from pushforward.fewstep.target import TargetNetwork

__all__ = [
    "ConsistencyFlowMatching",
    "DistilledFlow",
    "MeanFlow",
    "ShortcutModel",
    "TargetNetwork",
    "consistency_flow_matching",
    "distilled",
    "meanflow",
    "shortcut",
]
