"""The evaluation pipeline: checkpoint -> features (cached) -> optional DP gallery -> protocol -> results.

`ppvi features`, `ppvi eval` and the demo call it; the kernels it runs (ranking, protocols, DP noise)
are pure functions in `ppvi_cli.metrics`. Modules:

- `split`: a dataset's query and gallery as a protocol needs them (reads the dataset).
- `features`: a model's features of that split, and their cache (loads images, runs the model).
- `store`: the features `.npz` file (`ppvi eval --features`).
- `outputs`: the per-query CSV, ranked lists and figure `ppvi eval` writes.
- `pipeline`: the entries below, each returning the command's JSON document.
"""

from ppvi_cli.evaluation.outputs import EvalOutputs
from ppvi_cli.evaluation.pipeline import DPGallery, evaluate, evaluate_model, extract

__all__ = ["DPGallery", "EvalOutputs", "evaluate", "evaluate_model", "extract"]
