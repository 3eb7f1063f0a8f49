"""What decides the kernels a run executes, recorded in every run row (``environment``).

The same config, seed and commit repeat bitwise on one machine, but two machines of the same
kind can pick different kernels: torch dispatches CPU code on the instruction set it detects
(``torch.backends.cpu.get_cpu_capability()``: AVX2, AVX512, ...), oneDNN and MKL choose their
own code paths, and the thread count changes reduction orders. On CUDA the GPU, the CUDA and
cuDNN versions and the TF32 flags do the same. Results from machines whose `capture` differs are
comparable statistically, not bitwise (docs/reliability.md).
"""

from __future__ import annotations

import os
import platform
import re
import socket
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# environment variables that change which kernels run or how many threads they use
KERNEL_VARIABLES = (
    "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "CUBLAS_WORKSPACE_CONFIG",
    "NVIDIA_TF32_OVERRIDE",
)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA if torch sees a device, else CPU), ``cpu`` or ``cuda``; a CUDA device
    asked for where torch sees none is a `RuntimeError`."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; valid: auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device")
    return torch.device(name)


def describe_device(device: str) -> str:
    """What the database records of a resolved device: the GPU's name, or the CPU threads
    and host."""
    import torch

    if device == "cuda":
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu (threads={torch.get_num_threads()}, {socket.gethostname()})"


@cache
def cpu_model() -> str:
    """The CPU's marketing name (Linux: /proc/cpuinfo; elsewhere what `platform` knows)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@cache
def _build_libraries() -> dict[str, str]:
    """oneDNN and MKL versions from torch's build description."""
    import torch

    config = torch.__config__.show()
    found = {}
    onednn = re.search(r"(?:MKL-DNN|oneDNN)\s+v?([\d.]+)", config)
    if onednn:
        found["onednn"] = onednn[1]
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    if mkl:
        found["mkl"] = mkl[1]
    return found


def capture(device: str = "cpu") -> dict[str, Any]:
    """What decides the kernels of a run on `device` (``cpu`` or ``cuda``), now, in this process.

    Returns a JSON-serialisable dict: ``cpu_capability``, ``cpu_model``, ``machine``, ``torch``,
    ``onednn``, ``mkl`` (when torch was built with them), ``threads``, ``interop_threads``,
    ``deterministic`` (``torch.use_deterministic_algorithms``), ``float32_matmul_precision``,
    the kernel-relevant environment variables that are set, and on CUDA ``gpu``,
    ``gpu_capability``, ``cuda``, ``cudnn``, ``tf32_matmul``, ``tf32_cudnn``,
    ``cudnn_deterministic``, ``cudnn_benchmark``.
    """
    import torch

    environment: dict[str, Any] = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        **_build_libraries(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    variables = {name: os.environ[name] for name in KERNEL_VARIABLES if name in os.environ}
    if variables:
        environment["variables"] = variables
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.cuda.current_device()
        environment.update({
            "gpu": torch.cuda.get_device_name(index),
            "gpu_capability": ".".join(map(str, torch.cuda.get_device_capability(index))),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        })
    return environment


def describe(environment: dict[str, Any] | None) -> str:
    """One line: ``AVX2 on Intel Xeon ..., torch 2.13.0, oneDNN 3.12.0, MKL 2024.2, 1 thread``."""
    if not environment:
        return "not recorded"
    env = environment
    parts = [f"{env.get('cpu_capability', '?')} on {env.get('cpu_model', '?')}",
             f"torch {env.get('torch', '?')}"]
    if "onednn" in env:
        parts.append(f"oneDNN {env['onednn']}")
    if "mkl" in env:
        parts.append(f"MKL {env['mkl']}")
    threads = env.get("threads")
    parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
    if env.get("deterministic"):
        parts.append("deterministic algorithms")
    if "gpu" in env:
        tf32 = "on" if env.get("tf32_matmul") or env.get("tf32_cudnn") else "off"
        parts.append(f"{env['gpu']} (sm {env.get('gpu_capability')}), CUDA {env.get('cuda')}, "
                     f"cuDNN {env.get('cudnn')}, TF32 {tf32}")
    for name, value in sorted(env.get("variables", {}).items()):
        parts.append(f"{name}={value}")
    return ", ".join(parts)
