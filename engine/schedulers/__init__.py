"""Numpy schedulers that follow their diffusers namesakes step for step (no torch at run time).

``make_scheduler(name, config)`` builds one from a model's ``scheduler_config.json``, whichever
diffusers class wrote it, the way diffusers' ``TargetScheduler.from_config(config)`` would.
``SCHEDULER_NAMES`` are the samplers for any diffusion model; ``DISTILLED_SCHEDULER_NAMES`` only
fit models distilled for them (a model's description names one as its default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import BadRequest
from engine.schedulers.base import Scheduler
from engine.schedulers.ddim import DDIMScheduler
from engine.schedulers.dpmpp_2m import DPMPP2MScheduler
from engine.schedulers.euler import EulerScheduler
from engine.schedulers.euler_ancestral import EulerAncestralScheduler
from engine.schedulers.flow_euler import FlowEulerScheduler
from engine.schedulers.lcm import LCMScheduler

SCHEDULER_NAMES = ("euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_karras", "ddim",
                   "flow_euler")
DISTILLED_SCHEDULER_NAMES = ("lcm",)

# What each name means: a scheduler class and the settings the name itself fixes.
_RECIPES: dict[str, tuple[type[Scheduler], dict[str, Any]]] = {
    "euler": (EulerScheduler, {}),
    "euler_ancestral": (EulerAncestralScheduler, {}),
    "dpmpp_2m": (DPMPP2MScheduler, {"use_karras_sigmas": False,
                                    "use_exponential_sigmas": False}),
    "dpmpp_2m_karras": (DPMPP2MScheduler, {"use_karras_sigmas": True,
                                           "use_exponential_sigmas": False}),
    "ddim": (DDIMScheduler, {}),
    "flow_euler": (FlowEulerScheduler, {}),
    "lcm": (LCMScheduler, {}),
}

# The sampler names AUTOMATIC1111 writes in a PNG's "parameters" text, so other tools read ours.
_A1111_NAMES = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "ddim": "DDIM",
    "flow_euler": "Euler",
    "lcm": "LCM",
}

__all__ = ["DISTILLED_SCHEDULER_NAMES", "SCHEDULER_NAMES", "Scheduler", "a1111_sampler_name",
           "make_scheduler"]


def _check_name(name: str) -> None:
    if name not in _RECIPES:
        raise BadRequest(f"There is no scheduler called '{name}'; "
                         f"choose one of "
                         f"{', '.join(SCHEDULER_NAMES + DISTILLED_SCHEDULER_NAMES)}.")


def make_scheduler(name: str, config: Mapping[str, Any]) -> Scheduler:
    """The scheduler called ``name``, set up from a diffusers scheduler config (any class)."""
    _check_name(name)
    scheduler_class, fixed = _RECIPES[name]
    return scheduler_class({**config, **fixed})


def a1111_sampler_name(name: str) -> str:
    """The sampler name AUTOMATIC1111 would write for our scheduler ``name``."""
    _check_name(name)
    return _A1111_NAMES[name]
