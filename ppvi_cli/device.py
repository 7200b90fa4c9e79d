"""`--device auto|cpu|cuda[:N]` resolved in one place, with errors that say what was seen; the
device of a torchrun process; and the settings under which ppvi computes reproducibly on CUDA."""

from __future__ import annotations

import contextlib
import os
import re

from ppvi_cli.errors import PPVIError

DEVICE_HELP = "auto (a GPU when there is one), cpu, cuda or cuda:N"
# The cuBLAS workspace settings under which torch's deterministic mode accepts cuBLAS calls.
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")


def _visible() -> str:
    import torch

    available = torch.cuda.is_available()
    return (f"torch.cuda.is_available()={available}, device count={torch.cuda.device_count() if available else 0}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}")


def select_device(spec: str = "auto"):
    """Return the `torch.device` for a `--device` value; raise PPVIError when it cannot be had.

    Choosing a CUDA device also fixes cuBLAS's workspace (`CUBLAS_WORKSPACE_CONFIG`, unless the
    user set it) before any cuBLAS call, which `deterministic` needs.
    """
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    elif spec == "cpu":
        device = torch.device("cpu")
    else:
        match = re.fullmatch(r"cuda(?::(\d+))?", spec)
        if not match:
            raise PPVIError(f"invalid --device {spec!r}: use {DEVICE_HELP}")
        index = int(match.group(1) or 0)
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise PPVIError(f"--device {spec} is not available ({_visible()}); use --device cpu or a visible GPU index")
        device = torch.device(f"cuda:{index}")
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC[0])
    return device


def rank_device(spec: str = "auto", local_rank: str | None = None):
    """The device of one torchrun process (`local_rank`: its LOCAL_RANK, read from the environment
    when None).

    The CPU stays the CPU. `auto` and `cuda` take the process's own GPU: cuda:LOCAL_RANK when the
    process sees all of the node's GPUs, cuda:0 when it sees exactly one (a per-process
    CUDA_VISIBLE_DEVICES). An explicit `cuda:N` is kept only when it is that GPU: it is never
    silently replaced, and two processes are never put on one GPU.
    """
    import torch

    device = select_device(spec)
    if device.type != "cuda":
        return device
    raw = os.environ.get("LOCAL_RANK", "0") if local_rank is None else local_rank
    if not str(raw).strip().isdigit():
        raise PPVIError(f"LOCAL_RANK={raw!r} is not a process index (torchrun sets it to 0, 1, ...)")
    rank, count = int(raw), torch.cuda.device_count()
    if rank < count:
        index = rank
    elif count == 1:
        index = 0
    else:
        raise PPVIError(f"torchrun local rank {rank} has no GPU of its own ({_visible()}): start at most {count} "
                        "processes per node, or give each process one GPU with CUDA_VISIBLE_DEVICES")
    explicit = re.fullmatch(r"cuda:(\d+)", (spec or "").strip().lower())
    if explicit and int(explicit.group(1)) != index:
        raise PPVIError(f"--device {spec} under torchrun: local rank {rank} runs on cuda:{index} (one GPU per "
                        f"process); pass --device cuda (or auto) or cuda:{index}")
    return torch.device("cuda", index)


def device_kind(device) -> str:
    """The hardware a float result depends on, for keys of cached results: the CPU's vector ISA
    (`cpu (AVX512)`) or the GPU's model (`cuda (NVIDIA H200)`); kernels differ in the last bits
    between them, never between two GPUs of one model."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({torch.backends.cpu.get_cpu_capability()})"


def _tf32_switches():
    """`(getter, setter, IEEE value, TF32 value)` of cuDNN convolutions' and cuBLAS matmuls'
    float32 precision, in the API this torch has: the `fp32_precision` strings (torch >= 2.9), else
    the legacy `allow_tf32` booleans. Only these two are touched, so a setting made through either
    API elsewhere (cuDNN RNNs, the global default) is never read, and never mixed with another."""
    import torch

    def attribute(namespace, name):
        return (lambda: getattr(namespace, name)), (lambda value: setattr(namespace, name, value))

    conv = getattr(torch.backends.cudnn, "conv", None)
    matmul = torch.backends.cuda.matmul
    if conv is not None and hasattr(conv, "fp32_precision") and hasattr(matmul, "fp32_precision"):
        return [(*attribute(conv, "fp32_precision"), "ieee", "tf32"),
                (*attribute(matmul, "fp32_precision"), "ieee", "tf32")]
    return [(*attribute(torch.backends.cudnn, "allow_tf32"), False, True),
            (*attribute(matmul, "allow_tf32"), False, True)]


@contextlib.contextmanager
def deterministic(device, tf32: bool = False):
    """Run a block so that a re-run on the same GPU model and software gives the same bits.

    On CUDA: cuDNN with fixed algorithm choices (no benchmarking), torch's deterministic kernels
    (`torch.use_deterministic_algorithms`: an op without one raises instead of running), cuBLAS
    with a fixed workspace, and TF32 for convolutions and matmuls set on purpose: off by default
    (IEEE float32, the arithmetic a CPU run does), on with `tf32=True` (training, where speed
    matters more than the last bits). Exactly the settings changed are restored on exit. On the
    CPU nothing changes: its kernels are already deterministic run to run.
    """
    import torch

    if torch.device(device).type != "cuda":
        yield
        return
    workspace = os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC[0])
    if workspace not in CUBLAS_DETERMINISTIC:
        raise PPVIError(f"CUBLAS_WORKSPACE_CONFIG={workspace!r} makes cuBLAS non-deterministic; unset it or use "
                        f"{' or '.join(CUBLAS_DETERMINISTIC)}")
    cudnn = torch.backends.cudnn
    switches = [
        ((lambda: (torch.are_deterministic_algorithms_enabled(),
                   torch.is_deterministic_algorithms_warn_only_enabled())),
         (lambda value: torch.use_deterministic_algorithms(value[0], warn_only=value[1])), (True, False)),
        ((lambda: cudnn.deterministic), (lambda value: setattr(cudnn, "deterministic", value)), True),
        ((lambda: cudnn.benchmark), (lambda value: setattr(cudnn, "benchmark", value)), False),
        *((get, put, on if tf32 else off) for get, put, off, on in _tf32_switches()),
    ]
    saved = []
    try:
        for get, put, value in switches:
            saved.append((put, get()))
            put(value)
        yield
    finally:
        for put, value in reversed(saved):
            put(value)
