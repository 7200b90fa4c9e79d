"""A fake CUDA for machines without one: CPU tensors that say they live on `cuda:N`, and the device
rules of real CUDA enforced on them.

Why: almost every CUDA branch of ppvi runs only on a GPU, and CI has none. Under `FakeCuda`, a
tensor moved to `cuda:N` (by `.to`, `.cuda`, a factory's `device=`, `torch.load`'s
`map_location`, `Module.to`) becomes a `FakeCudaTensor`: it computes on the CPU but reports
`device == cuda:N`, and every torch call is checked as real CUDA would check it. Refused, as on a
GPU:
- CPU tensors of more than 0 dimensions mixed with CUDA ones (0-dim CPU scalars are allowed), or
  tensors of two CUDA devices in one op;
- indexing a CPU tensor with CUDA indices (CUDA tensors may take CPU indices);
- `.numpy()` / `np.asarray` of a CUDA tensor;
- a CPU `torch.Generator` drawing CUDA numbers;
- with `torch.use_deterministic_algorithms(True)`, the calls that have no deterministic CUDA
  implementation (the list in torch's documentation that ppvi's models could meet).
`.to("cpu")` and `.to("cuda:N")` copy, as a device move does. `torch.cuda` answers for two devices,
a current device (`set_device`, `torch.cuda.device(...)`) and their streams; its random-state
functions and `_lazy_init` raise, so code that reaches for GPU state the fake lacks fails loudly.
The mode also counts what a test may assert on: tensors created per device and host syncs.

The tensors and the rules are in `fake_cuda_tensor.py`; this module fakes the rest of the
environment (`torch.cuda`, `torch.load`'s `map_location`, faiss's GPU API). Everything goes through
a `TorchFunctionMode`, which is thread-local: DataLoader worker processes and the pin-memory thread
see plain CPU tensors, which is what they hold on a GPU machine too.
"""

from __future__ import annotations

import contextlib

import torch

from fake_cuda_tensor import DEVICES, DeviceMixError, FakeCuda, FakeCudaTensor, fake_index, map_tensors


class _Stream:
    """What `torch.cuda.current_stream` returns: enough for faiss's bridge to read."""

    def __init__(self, index: int):
        self.device = torch.device("cuda", index)
        self.cuda_stream = 1000 + index

    def __eq__(self, other):
        return isinstance(other, _Stream) and other.device == self.device

    __hash__ = None

    def is_capturing(self) -> bool:
        return False


@contextlib.contextmanager
def fake_cuda(monkeypatch):
    """Fake two CUDA devices for the duration; yields the mode (its `current` device and `calls`)."""
    mode = FakeCuda()

    def record(name, value=None):
        def call(*args, **kwargs):
            mode.calls.append(name)
            return value(*args, **kwargs) if callable(value) else value
        return call

    def exchange(index):
        previous = mode.current
        if index is not None and index >= 0:
            mode.current = mode.index_of(index)
        return previous

    def set_device(device):
        mode.current = mode.index_of(device)

    def refuse(*args, **kwargs):
        raise AssertionError("fake CUDA: a torch.cuda function that is not faked reached the (absent) driver")

    cuda = torch.cuda
    for name, value in {
        "is_available": lambda: True, "device_count": lambda: DEVICES,
        "current_device": lambda: mode.current, "set_device": set_device,
        "_exchange_device": exchange, "_maybe_exchange_device": exchange,
        "get_device_name": lambda device=None: f"Fake CUDA {mode.current if device is None else mode.index_of(device)}",
        "get_device_capability": lambda device=None: (9, 0), "is_bf16_supported": lambda *a, **k: True,
        "synchronize": lambda device=None: None,
        "current_stream": lambda device=None: _Stream(mode.current if device is None else mode.index_of(device)),
        "_lazy_init": refuse,
    }.items():
        monkeypatch.setattr(cuda, name, record(name, value))
    for name in ("get_rng_state", "get_rng_state_all", "set_rng_state", "set_rng_state_all"):
        monkeypatch.setattr(cuda, name, record(name, refuse))  # no GPU random state to save or restore
    monkeypatch.setattr(torch.accelerator, "current_device_index", lambda: mode.current)
    monkeypatch.setattr(torch.accelerator, "current_stream", lambda device=None: _Stream(mode.current))
    # Module.to swaps each parameter for its moved copy (the parameter object stays the same, as
    # with real CUDA), because a subclass cannot take over a parameter's data in place.
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    real_load = torch.load

    def load(*args, map_location=None, **kwargs):
        target = None
        if isinstance(map_location, (str, torch.device)) and torch.device(map_location).type == "cuda":
            target, map_location = mode.index_of(map_location), "cpu"
        payload = real_load(*args, map_location=map_location, **kwargs)
        if target is None:
            return payload
        return map_tensors(payload, lambda t: t.to(torch.device("cuda", target)))

    monkeypatch.setattr(torch, "load", load)
    FakeCuda.active = mode
    try:
        with mode:
            yield mode
    finally:
        FakeCuda.active = None
        torch.__future__.set_swap_module_params_on_conversion(swap)


class FakeGpuResources:
    """`faiss.StandardGpuResources` stand-in: records nothing, needs no GPU."""


def fake_faiss_gpu(monkeypatch, mode: FakeCuda):
    """faiss with GPU support over the fake devices: `pairwise_distance_gpu` checks what faiss's
    torch bridge relies on (inputs on `device`, and `device` current, so the search runs on the
    stream torch queued the inputs on) and computes with faiss's CPU kernel."""
    import faiss
    import faiss.contrib.torch_utils  # noqa: F401  (imported first, so it cannot replace the fake below)

    cpu_pairwise = faiss.pairwise_distances

    def pairwise_distance_gpu(res, xq, xb, D=None, metric=faiss.METRIC_L2, device=-1):
        mode.calls.append("pairwise_distance_gpu")
        for name, x in (("xq", xq), ("xb", xb)):
            if fake_index(x) != device:
                raise DeviceMixError(f"faiss pairwise_distance_gpu(device={device}): {name} is on {x.device}")
        if mode.current != device:
            raise DeviceMixError(f"faiss pairwise_distance_gpu(device={device}) with cuda:{mode.current} current: "
                                 "faiss's bridge would use the current device's stream, unordered with the inputs")
        with torch._C.DisableTorchFunction():
            q = torch.Tensor.as_subclass(xq, torch.Tensor).contiguous().numpy()
            b = torch.Tensor.as_subclass(xb, torch.Tensor).contiguous().numpy()
        scores = torch.from_numpy(cpu_pairwise(q, b, metric=metric))
        return scores.to(torch.device("cuda", device))

    monkeypatch.setattr(faiss, "StandardGpuResources", FakeGpuResources, raising=False)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: DEVICES)
    monkeypatch.setattr(faiss, "pairwise_distance_gpu", pairwise_distance_gpu, raising=False)


def is_fake_cuda(t, index: int | None = None) -> bool:
    """Whether `t` is a fake CUDA tensor (on `index`, when given)."""
    return isinstance(t, FakeCudaTensor) and (index is None or t._fake_index == index)


__all__ = ["DEVICES", "DeviceMixError", "FakeCuda", "FakeCudaTensor", "fake_cuda", "fake_faiss_gpu", "is_fake_cuda"]
