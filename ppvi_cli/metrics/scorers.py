"""How similarities are computed: L2 normalisation and the faiss / torch inner-product backends.

Both backends return float32 `[queries, gallery]` blocks as torch tensors on their device; the ranking
code (`retrieval.py`) never mixes scores from two products for one decision, so either is exact in
its own arithmetic. The two may round a dot product differently in the last bit (different BLAS), so
their metrics agree exactly when no positive and negative are closer than float32 rounding.
"""

from __future__ import annotations

import numpy as np

from ppvi_cli.errors import PPVIError

BACKENDS = ("auto", "faiss", "torch")  # auto: `backends.choose_backend`


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm, `[N, D]` float32; zero rows stay zero.

    The norm is summed in float64 and the division is element by element, so a row's normalised
    values never depend on which other rows it was normalised with (a gallery chunk and a gathered
    subset give bit-identical rows).
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise PPVIError(f"features must be a 2-D array [rows, dims], got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64)).astype(np.float32)
    if not np.isfinite(norms).all():
        raise PPVIError("features contain NaN or infinite values (or overflow float32); re-extract them")
    norms[norms == 0] = 1.0
    return x / norms[:, None]


class Scorer:
    """Inner products of normalised query and gallery blocks, as float32 torch tensors on `device`."""

    name = "base"

    def __init__(self, device):
        self.device = device

    def queries(self, x: np.ndarray):
        return x

    def gallery(self, x: np.ndarray):
        return x

    def scores(self, q, g):  # -> torch.Tensor [len(q), len(g)] float32 on self.device
        raise NotImplementedError


class TorchScorer(Scorer):
    """`torch.matmul` on the chosen device (MKL or OpenBLAS on CPU, cuBLAS on CUDA)."""

    name = "torch"

    def queries(self, x):
        import torch

        return torch.from_numpy(x).to(self.device)

    gallery = queries

    def scores(self, q, g):
        return q @ g.T


class FaissScorer(Scorer):
    """faiss's exhaustive inner products: `pairwise_distance_gpu` on a `StandardGpuResources` when
    faiss has GPU support and a CUDA device was chosen, `pairwise_distances` (BLAS sgemm) otherwise.

    faiss's k-NN heaps are not used for selection: they do not break ties by gallery index.
    faiss's torch bridge runs on torch's current device and stream, so the GPU product runs with
    the chosen device made current: on cuda:N it is then ordered after torch's copies on that
    device's stream (with device 0 current it would run on another stream, unordered).
    """

    def __init__(self, device):
        import faiss
        import torch

        self.gpu = device.type == "cuda"
        if self.gpu and device.index is None:  # "cuda": the current device, named, for the bridge
            device = torch.device("cuda", torch.cuda.current_device())
        super().__init__(device)
        self._faiss = faiss
        if self.gpu:
            import faiss.contrib.torch_utils  # noqa: F401  (lets faiss take CUDA tensors)

            self._res = faiss.StandardGpuResources()
        self.name = "faiss-gpu" if self.gpu else "faiss-cpu"

    def queries(self, x):
        import torch

        return torch.from_numpy(x).to(self.device) if self.gpu else np.ascontiguousarray(x)

    gallery = queries

    def scores(self, q, g):
        import torch

        ip = self._faiss.METRIC_INNER_PRODUCT
        if self.gpu:
            with torch.cuda.device(self.device):
                return self._faiss.pairwise_distance_gpu(self._res, q, g, metric=ip, device=self.device.index)
        return torch.from_numpy(self._faiss.pairwise_distances(q, g, metric=ip))


def make_scorer(backend: str = "faiss", device: str = "cpu") -> tuple[Scorer, list[str]]:
    """The scorer for `--backend` and `--device`, and notes on any fallback taken.

    faiss without GPU support (the faiss-cpu wheel) runs on the CPU even for a CUDA device; the
    note says so and suggests `--backend torch` for the GPU. `auto` picks as `choose_backend` says.
    """
    import torch

    from ppvi_cli.device import select_device
    from ppvi_cli.metrics.backends import choose_backend, faiss_notes, load_faiss

    if backend not in BACKENDS:
        raise PPVIError(f"unknown --backend {backend!r} (choices: {', '.join(BACKENDS)})")
    dev = select_device(device)
    notes = []
    if backend == "auto":
        backend, notes = choose_backend(dev)
    if backend == "torch":
        return TorchScorer(dev), notes
    faiss = load_faiss()
    notes += faiss_notes()
    if dev.type == "cuda" and not (hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0):
        notes.append("this faiss build has no GPU support: scores computed by faiss on the CPU "
                     "(use --backend torch to score on the GPU)")
        dev = torch.device("cpu")
    return FaissScorer(dev), notes


def duplicate_rows(x: np.ndarray, max_elements: int = 1 << 23) -> tuple[np.ndarray, np.ndarray]:
    """Groups of bit-identical rows of `x` [N, D]: (group [N] int64, -1 for a unique row; the first
    row of each group [n_groups]).

    Rows are hashed chunk by chunk (a multiply-add of their 32-bit words, wrapping mod 2**64), and
    rows with equal hashes are then compared exactly, so a collision never merges different rows.
    """
    n, dim = x.shape
    mult = np.random.default_rng(0x5EED).integers(1, 2**63, dim, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    hashes = np.empty(n, np.uint64)
    step = max(1, max_elements // max(dim, 1))
    for s in range(0, n, step):
        words = np.ascontiguousarray(x[s:s + step], dtype=np.float32).view(np.uint32).astype(np.uint64)
        hashes[s:s + step] = (words * mult).sum(axis=1, dtype=np.uint64)
    group = np.full(n, -1, np.int64)
    order = np.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    repeated = np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1])
    firsts = []
    for run in np.split(repeated, np.flatnonzero(np.diff(repeated) != 1) + 1) if len(repeated) else []:
        rows = np.sort(order[run[0]:run[-1] + 2])  # the rows sharing one hash, in gallery order
        block = np.ascontiguousarray(x[rows], dtype=np.float32)
        _, first, inverse = np.unique(block.view(np.dtype((np.void, 4 * dim))), return_index=True,
                                      return_inverse=True)
        counts = np.bincount(inverse.ravel())
        for u in np.flatnonzero(counts > 1):
            group[rows[inverse.ravel() == u]] = len(firsts)
            firsts.append(rows[first[u]])
    return group, np.asarray(firsts, np.int64)


def exact_scores(query, gallery):
    """float32 rounding of float64 inner products, `[Q, G]` on the queries' device.

    The products of float32 inputs are exact in float64 and the sum's error (~1e-16) is far below
    float32 rounding, so the result does not depend on the kernel or on where a row sits in the
    product: identical rows get identical scores (except with probability ~1e-9 per score).
    """
    return (query.double() @ gallery.double().T).float()
