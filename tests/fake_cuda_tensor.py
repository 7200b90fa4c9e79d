"""The tensors and the torch-function mode behind `fake_cuda` (see tests/fake_cuda.py): CPU tensors
that report `cuda:N`, and the device rules of real CUDA checked on every torch call.

Each call is routed once through `FakeCuda.__torch_function__`: metadata passes straight through,
device moves (`to`, `cuda`, `cpu`, factories' `device=`), indexing, `copy_`, gradients and the
other calls whose device rules differ from "all tensors on one device" have their own handler
(`_SPECIAL`); everything else is checked for device mixes, computed on the CPU and its outputs
tagged with the device of its inputs.
"""

from __future__ import annotations

import copy
import numbers
from collections import Counter

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

DEVICES = 2


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor that reports `cuda:<_fake_index>`; only meaningful inside `FakeCuda`."""

    _fake_index: int = 0
    # All handling is in the mode; outside it the subclass behaves as a plain tensor.
    __torch_function__ = torch._C._disabled_torch_function_impl

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self._fake_index)

    @property
    def is_cuda(self) -> bool:
        return True

    @property
    def is_cpu(self) -> bool:
        return False

    def get_device(self) -> int:
        return self._fake_index

    def __deepcopy__(self, memo):
        if id(self) not in memo:
            with torch._C.DisableTorchFunction():
                plain = torch.Tensor.as_subclass(self, torch.Tensor).detach().clone()
                copied = torch.Tensor._make_subclass(FakeCudaTensor, plain, self.requires_grad)
            copied.__dict__.update(copy.deepcopy(self.__dict__, memo))
            memo[id(self)] = copied
        return memo[id(self)]

    def __reduce_ex__(self, proto):
        # Saved as the CPU tensor it is; loading maps it where map_location says (as a real
        # CUDA tensor would be mapped), and weights_only loading never meets this class.
        with torch._C.DisableTorchFunction():
            plain = torch.Tensor.as_subclass(self, torch.Tensor)
        return plain.__reduce_ex__(proto)


class DeviceMixError(RuntimeError):
    """What real CUDA would have refused."""


def fake_index(t) -> int | None:
    """The fake CUDA index of `t`, or None for a plain (CPU) tensor."""
    return t._fake_index if isinstance(t, FakeCudaTensor) else None


def _wrap(t: torch.Tensor, index: int) -> FakeCudaTensor:
    if isinstance(t, FakeCudaTensor):
        if t._fake_index != index:
            raise DeviceMixError(f"fake CUDA: a cuda:{t._fake_index} tensor came back for cuda:{index}")
        return t
    if FakeCuda.active is not None:
        FakeCuda.active.created[index] += 1
    with torch._C.DisableTorchFunction():
        if t.is_leaf and t.requires_grad:  # stays a leaf (as_subclass would make a view of it)
            out = torch.Tensor._make_subclass(FakeCudaTensor, t.detach(), True)
        else:
            out = torch.Tensor.as_subclass(t, FakeCudaTensor)
    out._fake_index = index
    if getattr(t, "_is_param", False):
        out._is_param = True
    return out


def map_tensors(value, fn):
    """Apply `fn` to every tensor inside nested tuples, lists and dicts (struct sequences included)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        items = [map_tensors(v, fn) for v in value]
        if isinstance(value, list):
            return items
        if hasattr(type(value), "n_fields") or hasattr(value, "_fields"):  # torch.return_types / namedtuple
            return type(value)(items) if hasattr(type(value), "n_fields") else type(value)(*items)
        return tuple(items)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    return value


def _tensors(value, found: list | None = None) -> list[torch.Tensor]:
    """Every tensor inside nested tuples, lists and dicts."""
    found = [] if found is None else found
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _tensors(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _tensors(item, found)
    return found


# Calls real CUDA refuses under torch.use_deterministic_algorithms(True) (torch's documented list,
# the entries ppvi's layers could reach): name -> when it applies (args, kwargs, input needs grad).
def _linear_mode(args, kwargs, grad):
    mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
    return grad and mode in ("linear", "bilinear", "bicubic", "trilinear")


_NONDETERMINISTIC = {
    F.interpolate: _linear_mode,
    F.adaptive_avg_pool2d: lambda a, k, grad: grad,
    F.adaptive_avg_pool3d: lambda a, k, grad: grad,
    F.adaptive_max_pool2d: lambda a, k, grad: grad,
    F.grid_sample: lambda a, k, grad: grad,
    F.nll_loss: lambda a, k, grad: a[0].dim() > 2,  # the spatial (2-D) NLL loss
    F.pad: lambda a, k, grad: grad and k.get("mode", a[2] if len(a) > 2 else "constant") == "reflect",
    torch.histc: lambda a, k, grad: True,
    torch.Tensor.histc: lambda a, k, grad: True,
    torch.bincount: lambda a, k, grad: k.get("weights", a[1] if len(a) > 1 else None) is not None,
    torch.Tensor.put_: lambda a, k, grad: True,
    torch.median: lambda a, k, grad: len(a) > 1 or "dim" in k,
    torch.Tensor.median: lambda a, k, grad: len(a) > 1 or "dim" in k,
}


class FakeCuda(TorchFunctionMode):
    """The mode; use through `fake_cuda.fake_cuda()`, which also fakes `torch.cuda`."""

    active: "FakeCuda | None" = None  # the mode `fake_cuda` entered (one at a time)

    def __init__(self):
        super().__init__()
        self.current = 0
        self.calls: list[str] = []  # names of the fake torch.cuda functions called (for tests)
        self.created = Counter()  # tensors made on each device
        self.syncs: list[str] = []  # calls that would make the host wait for the device

    def host_sync(self, func, tensors) -> None:
        if any(fake_index(t) is not None for t in tensors):
            self.syncs.append(_name(func))

    # --- device arithmetic ---

    def index_of(self, device) -> int | None:
        """None for the CPU, else the CUDA index `device` names (the current one when unnumbered)."""
        if device is None:
            return None
        if isinstance(device, numbers.Integral) and not isinstance(device, bool):
            return int(device)
        device = torch.device(device)
        if device.type == "cpu":
            return None
        if device.type != "cuda":
            raise DeviceMixError(f"fake CUDA: device {device} is neither cpu nor cuda")
        index = self.current if device.index is None else device.index
        if not 0 <= index < DEVICES:
            raise DeviceMixError(f"fake CUDA: cuda:{index} does not exist ({DEVICES} devices)")
        return index

    def _common(self, func, tensors: list[torch.Tensor]) -> int | None:
        """The one device of `tensors` (None: CPU), refusing mixes as CUDA kernels do."""
        indices = {fake_index(t) for t in tensors if fake_index(t) is not None}
        if len(indices) > 1:
            raise DeviceMixError(f"{_name(func)}: tensors on cuda:{min(indices)} and cuda:{max(indices)}")
        if not indices:
            return None
        (index,) = indices
        for t in tensors:
            if fake_index(t) is None and t.dim() > 0:
                raise DeviceMixError(f"{_name(func)}: Expected all tensors to be on the same device, but found "
                                     f"at least two devices, cuda:{index} and cpu (a CPU tensor of shape "
                                     f"{tuple(t.shape)})")
        return index

    # --- the mode ---

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _METADATA:  # answers about the tensor itself: nothing to check or move
            return func(*args, **(kwargs or {}))
        kwargs = dict(kwargs or {})
        if func in _SYNCS:
            self.host_sync(func, _tensors((args, kwargs)))
        special = _SPECIAL.get(func)
        if special is not None:
            return special(self, func, args, kwargs)
        explicit = "device" in kwargs and kwargs["device"] is not None
        target = self.index_of(kwargs["device"]) if explicit else None
        if explicit:
            kwargs["device"] = "cpu"
        tensors = _tensors((args, kwargs))
        inferred = self._common(func, tensors)
        index = target if explicit else inferred
        if index is not None:
            self._check_generator(func, kwargs)
            self._check_deterministic(func, args, kwargs, tensors)
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if index is None:  # an explicit CPU device copies what is on a (fake) GPU
            return map_tensors(out, lambda t: _plain_call(torch.Tensor.to, (t, "cpu"), {"copy": True})
                        if isinstance(t, FakeCudaTensor) else t) if explicit else out
        inputs = {id(t) for t in tensors}
        return map_tensors(out, lambda t: t if id(t) in inputs and isinstance(t, FakeCudaTensor) else _wrap(t, index))

    def _check_generator(self, func, kwargs) -> None:
        generator = kwargs.get("generator")
        if generator is not None and generator.device.type != "cuda":
            raise DeviceMixError(f"{_name(func)}: Expected a 'cuda' device type for generator but found "
                                 f"'{generator.device.type}'")

    def _check_deterministic(self, func, args, kwargs, tensors) -> None:
        rule = _NONDETERMINISTIC.get(func)
        if rule is None or not torch.are_deterministic_algorithms_enabled():
            return
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        if rule(args, kwargs, grad):
            raise DeviceMixError(f"{_name(func)} does not have a deterministic implementation on CUDA, but "
                                 "torch.use_deterministic_algorithms(True) is on")


def _name(func) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def _plain_call(func, args, kwargs):
    with torch._C.DisableTorchFunctionSubclass():
        return func(*args, **kwargs)


def _to(mode: FakeCuda, func, args, kwargs):
    self, rest = args[0], args[1:]
    copy = kwargs.pop("copy", False)
    if rest and isinstance(rest[0], torch.Tensor):  # .to(other): other's device and dtype
        device, dtype = rest[0].device, rest[0].dtype
        non_blocking = kwargs.get("non_blocking", rest[1] if len(rest) > 1 else False)
        memory_format = kwargs.get("memory_format")
    else:
        with torch._C.DisableTorchFunction():
            device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*rest, **kwargs)
    source = fake_index(self)
    target = source if device is None else mode.index_of(device)
    options = {"dtype": dtype, "non_blocking": non_blocking, "copy": copy or target != source,
               "memory_format": memory_format}
    if source is not None and target is None:
        mode.host_sync(func, [self])
    out = _plain_call(torch.Tensor.to, (self,), {k: v for k, v in options.items() if v is not None})
    return out if target is None or out is self else _wrap(out, target)


def _cuda(mode: FakeCuda, func, args, kwargs):
    self = args[0]
    device = args[1] if len(args) > 1 else kwargs.get("device")
    target = mode.current if device is None else mode.index_of(device)
    if fake_index(self) == target:
        return self
    return _wrap(_plain_call(torch.Tensor.to, (self,), {"copy": True}), target)


def _cpu(mode: FakeCuda, func, args, kwargs):
    self = args[0]
    if fake_index(self) is None:
        return _plain_call(func, args, kwargs)
    mode.host_sync(func, [self])
    return _plain_call(torch.Tensor.to, (self, "cpu"), {"copy": True})


def _numpy(mode: FakeCuda, func, args, kwargs):
    self = args[0]
    if fake_index(self) is not None:
        raise TypeError(f"can't convert cuda:{fake_index(self)} device type tensor to numpy. Use Tensor.cpu() "
                        "to copy the tensor to host memory first.")
    return _plain_call(func, args, kwargs)


def _pin_memory(mode: FakeCuda, func, args, kwargs):
    if fake_index(args[0]) is not None:
        raise DeviceMixError("cannot pin a CUDA tensor: only dense CPU tensors can be pinned")
    return args[0]  # pinning is a no-op for the fake (real pinning needs a driver)


def _passthrough(mode: FakeCuda, func, args, kwargs):
    return _plain_call(func, args, kwargs)


def _module_load(mode: FakeCuda, func, args, kwargs):
    # load_state_dict with swapped parameters: copy_ into the parameter, so the parameter's device.
    self, other = args[0], args[1]
    assign = kwargs.get("assign", args[2] if len(args) > 2 else False)
    index = fake_index(other if assign else self)
    out = _plain_call(func, args, kwargs)
    return out if index is None else _wrap(out, index)


def _indexing(mode: FakeCuda, func, args, kwargs):
    """self[index] (= value): CUDA self takes CPU or same-device indices; CPU self refuses CUDA ones."""
    self, index = args[0], args[1]
    own = fake_index(self)
    indices = _tensors(index)
    for t in indices:
        if fake_index(t) is not None and fake_index(t) != own:
            where = "cpu" if own is None else f"cuda:{own}"
            raise DeviceMixError(f"indices should be either on cpu or on the same device as the indexed tensor "
                                 f"({where}); got indices on cuda:{fake_index(t)}")
    if func is torch.Tensor.__setitem__ and isinstance(args[2], torch.Tensor):
        value = args[2]
        advanced = bool(indices)
        if fake_index(value) != own and value.dim() > 0 and (own is None or advanced):
            raise DeviceMixError(f"__setitem__: a value on {value.device} for a tensor on "
                                 f"{'cpu' if own is None else f'cuda:{own}'}")
    out = _plain_call(func, args, kwargs)
    if own is None or out is None:
        return out
    return map_tensors(out, lambda t: t if t is self else _wrap(t, own))


def _index_put(mode: FakeCuda, func, args, kwargs):
    self, indices, values = args[0], args[1], args[2]
    own = fake_index(self)
    for t in _tensors(indices):
        if fake_index(t) is not None and fake_index(t) != own:
            raise DeviceMixError(f"index_put: indices on cuda:{fake_index(t)} for a tensor on "
                                 f"{'cpu' if own is None else f'cuda:{own}'}")
    if fake_index(values) != own and values.dim() > 0:
        raise DeviceMixError(f"index_put: values on {values.device} for a tensor on "
                             f"{'cpu' if own is None else f'cuda:{own}'}")
    out = _plain_call(func, args, kwargs)
    return out if own is None or out is self else _wrap(out, own)


def _grad_of(mode: FakeCuda, func, args, kwargs):
    """`torch.autograd.grad`: each gradient on its input's device (autograd itself ran on the CPU)."""
    grads = _plain_call(func, args, kwargs)
    inputs = args[1] if len(args) > 1 else kwargs["inputs"]
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    return tuple(g if g is None or fake_index(x) is None else _wrap(g, fake_index(x)) for g, x in zip(grads, inputs))


def _set_attr(mode: FakeCuda, func, args, kwargs):
    """`t.grad = g` / `t.data = d`: real CUDA refuses a gradient on another device; moving a
    tensor's data across devices is not emulated (nothing in ppvi does it)."""
    self, value = args[0], args[1]
    if value is not None and fake_index(value) != fake_index(self):
        raise DeviceMixError(f"{_name(func)}: assigned tensor is on {value.device}, the tensor on {self.device}")
    return _plain_call(func, args, kwargs)


def _new_tensor(mode: FakeCuda, func, args, kwargs):
    self = args[0]
    index = mode.index_of(kwargs.pop("device")) if kwargs.get("device") is not None else fake_index(self)
    out = _plain_call(func, args, kwargs)
    return out if index is None else _wrap(out, index)


_SPECIAL = {
    # calls that may see two devices and leave each tensor where it is (copy_ moves data across)
    torch._has_compatible_shallow_copy_type: _passthrough,
    torch.Tensor.copy_: _passthrough,
    torch.Tensor.to: _to,
    torch.Tensor.cuda: _cuda,
    torch.Tensor.cpu: _cpu,
    torch.Tensor.numpy: _numpy,
    torch.Tensor.__array__: _numpy,
    torch.Tensor.pin_memory: _pin_memory,
    torch.Tensor.module_load: _module_load,
    torch.Tensor.__getitem__: _indexing,
    torch.Tensor.__setitem__: _indexing,
    torch.Tensor.index_put_: _index_put,
    torch.Tensor.index_put: _index_put,
    torch.autograd.grad: _grad_of,
    torch.Tensor.grad.__set__: _set_attr,
    torch.Tensor.data.__set__: _set_attr,
    torch.Tensor.new_tensor: _new_tensor,
    torch.Tensor.new_zeros: _new_tensor,
    torch.Tensor.new_ones: _new_tensor,
    torch.Tensor.new_empty: _new_tensor,
    torch.Tensor.new_full: _new_tensor,
}


_METADATA = {torch.Tensor.shape.__get__, torch.Tensor.dtype.__get__, torch.Tensor.requires_grad.__get__,
             torch.Tensor.is_leaf.__get__, torch.Tensor.grad_fn.__get__, torch.Tensor.ndim.__get__,
             torch.Tensor.layout.__get__, torch.Tensor.device.__get__, torch.Tensor.is_sparse.__get__,
             torch.Tensor.is_quantized.__get__, torch.Tensor.is_meta.__get__, torch.Tensor.dim, torch.Tensor.size,
             torch.Tensor.numel, torch.Tensor.stride, torch.Tensor.is_contiguous, torch.Tensor.is_floating_point,
             torch.Tensor.is_complex, torch.Tensor.element_size, torch.Tensor.__len__, torch.Tensor.data_ptr,
             torch.Tensor.storage_offset, torch.Tensor._version.__get__, torch.Tensor.is_nested.__get__}
# Calls whose result the host must wait for on a real GPU (a device-to-host copy or a data-dependent shape).
_SYNCS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__,
          torch.Tensor.__index__, torch.Tensor.nonzero, torch.nonzero, torch.unique, torch.Tensor.unique,
          torch.masked_select, torch.Tensor.masked_select, torch.Tensor.numpy}
