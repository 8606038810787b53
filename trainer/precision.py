"""Numeric precision of the model's forward passes: float32, or bfloat16 autocast where the hardware
computes bf16 natively.

Measured on this project's 2-core AVX-512 BF16 CPU with all-MiniLM-L6-v2: an index refresh embeds twice
the items per second of float32 ``SentenceTransformer.encode`` and every vector stays within cosine
0.99997 of its float32 twin (``bench/results/index.txt``); training runs 1.6x the pairs per second of
sentence-transformers' trainer in float32 (``bench/results/train.txt``). Weights and optimiser state
stay float32 ("mixed" precision).
Where bf16 would be emulated (an older CPU, a GPU without it) "auto" keeps float32, which is faster there.
"""

from __future__ import annotations

import contextlib
import functools

PRECISIONS = ("auto", "fp32", "bf16")


def resolved_precision(device_type: str, precision: str = "auto") -> str:
    """"fp32" or "bf16" for a device type ("cpu", "cuda", …)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device_type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device_type == "cpu":
        return "bf16" if _cpu_computes_bf16() else "fp32"
    return "fp32"


def autocast(device_type: str, precision: str = "auto"):
    """A context in which forward passes run at ``precision`` (nothing changes for fp32)."""
    if resolved_precision(device_type, precision) == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type, dtype=torch.bfloat16)


@functools.cache
def _cpu_computes_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPU instructions oneDNN runs bfloat16 matrix products on."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
