"""What a recorded benchmark run is labelled with: the device's name, the versions, the machine."""

from __future__ import annotations

import os
import platform
import time

import torch

__all__ = ["device_name", "versions", "load_average", "machine_info"]


def device_name(device: str) -> str:
    """The GPU's name for a CUDA device, else the CPU's model name (from /proc/cpuinfo where there is one)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def versions() -> dict:
    """torch, Triton (None when absent or broken) and CUDA (None on a CPU build) versions."""
    try:
        import triton  # optional: missing on CPU-only installs

        triton_version = triton.__version__
    except Exception:  # ImportError, or a broken install
        triton_version = None
    return {"torch": torch.__version__, "triton": triton_version, "cuda": torch.version.cuda}


def load_average() -> tuple[float, float, float] | None:
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        return None


def machine_info(device: str) -> dict:
    """Date, device name, core and thread counts, platform, Python and the versions of :func:`versions`."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": device,
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        **versions(),
        "loadavg": load_average(),
    }
