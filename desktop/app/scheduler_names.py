"""The names the window shows for the engine's schedulers: the ones users know from other
tools (AUTOMATIC1111's sampler names where it has one). The stored value, the command line's
``--scheduler`` and the picture's metadata keep the engine's own name."""

from __future__ import annotations

DISPLAY_NAMES = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "ddim": "DDIM",
    "lcm": "LCM",
    "flow_euler": "Euler (flow matching)",  # A1111 has no flow samplers; ComfyUI's "euler"
}


def display_name(scheduler: str) -> str:
    """The name to show; one the table does not know yet shows as the engine names it."""
    return DISPLAY_NAMES.get(scheduler, scheduler)
