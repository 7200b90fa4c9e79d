"""Which scorer computes retrieval products: faiss (its CPU or GPU build) or torch, and `--backend auto`.

The faiss-cpu and faiss-gpu wheels both install the one `faiss` module (installing one over the
other overwrites its files), so ppvi depends on neither: `pip install ppvi[cpu]` or `ppvi[gpu]`
picks one (README, "On a GPU machine"), and without either `auto` scores with torch. Every backend
is exact (`scorers.py`); the choice is about speed and where the products run.
"""

from __future__ import annotations

from importlib import metadata

from ppvi_cli.errors import PPVIError

# The wheels that install the `faiss` module (any two in one environment overwrite each other).
FAISS_WHEELS = ("faiss-cpu", "faiss-gpu", "faiss-gpu-cu12", "faiss-gpu-cu11", "faiss-gpu-cuvs", "faiss-cuda")
INSTALL_HINT = "pip install 'ppvi[cpu]' (or 'ppvi[gpu]' on a CUDA machine)"


def load_faiss():
    """The `faiss` module, or a one-line PPVIError saying how to install it."""
    try:
        import faiss
    except ImportError as err:
        raise PPVIError(f"--backend faiss needs faiss, which is not installed: {INSTALL_HINT}, or use "
                        "--backend torch (exact as well)") from err
    return faiss


def faiss_gpus(faiss) -> int:
    """GPUs this faiss build can use: 0 for the CPU build (it has no `StandardGpuResources`)."""
    return int(faiss.get_num_gpus()) if hasattr(faiss, "StandardGpuResources") else 0


def installed_faiss_wheels() -> list[str]:
    """The faiss wheels installed here; more than one means the `faiss` module is a mix of them."""
    found = []
    for name in FAISS_WHEELS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def faiss_notes() -> list[str]:
    """A warning when two faiss wheels share the `faiss` module."""
    wheels = installed_faiss_wheels()
    if len(wheels) < 2:
        return []
    return [f"{' and '.join(wheels)} are installed together and overwrite each other's faiss module; keep one: "
            f"pip uninstall -y {' '.join(wheels)} && {INSTALL_HINT}"]


def choose_backend(device) -> tuple[str, list[str]]:
    """`--backend auto` on a resolved `torch.device`: `(backend, notes)`.

    On a CUDA device: "faiss" when faiss sees that GPU (its GPU index), else "torch" on that GPU.
    On the CPU: "faiss" (BLAS sgemm), or "torch" when no faiss is installed.
    """
    try:
        faiss = load_faiss()
    except PPVIError:
        faiss = None
    if device.type == "cuda":
        if faiss is not None and faiss_gpus(faiss) > (device.index or 0):
            return "faiss", []
        why = "faiss is not installed" if faiss is None else "this faiss build does not see that GPU"
        return "torch", [f"{why}: scores computed by torch on {device}"]
    if faiss is None:
        return "torch", [f"faiss is not installed: scores computed by torch on the CPU ({INSTALL_HINT} for faiss)"]
    return "faiss", []
