"""Numeric precision choices: "fp32", "bf16", or "auto" (bf16 where the hardware runs it fast)."""

import contextlib

import torch
from ..errors import SamtextError

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bfloat16 instructions (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device) -> str:
    """Turns "auto" into "bf16" or "fp32" for ``device``."""
    if precision not in PRECISIONS:
        raise SamtextError("precision must be one of %s, got %r" % (PRECISIONS, precision))
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"


def resolve_device(device: str = "auto") -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def autocast(device, precision: str):
    """A context that runs matmuls/convs in bfloat16 when ``precision == "bf16"``."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
