"""A training run's folder: arguments, per-epoch checkpoint and resume state, log and summary.

Layout of `OUT/`:
  run.json          training arguments + versions + seed, written before the first step
  last.pt           the model checkpoint after the last finished epoch (`models/checkpoint.py`)
  state-NNNN.pt     optimizer, center-loss and RNG state after epoch NNNN (the one that goes with last.pt)
  train_log.jsonl   one line per finished epoch
  summary.json      written when the last epoch is done

The folder is a run folder (`ppvi_cli.runfolder`): its identity is the arguments a resume may not
change, every file is listed with its hash when written, a resume trusts last.pt and its state file
only when they still hash to what was written, and any other file in it is refused. Each epoch
writes its state file first and `last.pt` second, then drops older state files, so a kill at any
moment leaves a `last.pt` whose state file is still there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ppvi_cli.errors import PPVIError
from ppvi_cli.models.checkpoint import read_torch_file
from ppvi_cli.runfolder import RunFolder
from ppvi_cli.runinfo import stamp

RUN_FORMAT = "ppvi-train-run"
# Arguments a resumed run may change: they pick hardware or data loading, not what is computed.
RESUMABLE_CHANGES = ("device", "workers")
_RUN_FILES = re.compile(r"^(run\.json|last\.pt|state-\d{4}\.pt|train_log\.jsonl|summary\.json)$")


class RunDir:
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.run_json = self.out / "run.json"
        self.last = self.out / "last.pt"
        self.log = self.out / "train_log.jsonl"
        self.summary = self.out / "summary.json"
        self.folder: RunFolder | None = None

    def state(self, epoch: int) -> Path:
        return self.out / f"state-{epoch:04d}.pt"

    def holds_run(self) -> bool:
        return self.run_json.is_file() or self.last.is_file()

    def check(self, train_args: dict, resume: bool) -> bool:
        """Whether to resume: True when `--resume` finds a run here with the same arguments.

        A folder holding a run is refused without `--resume`, and with it when any argument other
        than those in RESUMABLE_CHANGES differs. `--resume` on an empty folder starts afresh, so
        one command line serves both the first launch and every relaunch after a kill.
        """
        if self.out.exists() and not self.out.is_dir():
            raise PPVIError(f"--out {self.out} is a file; pass a folder for the training run")
        if not self.holds_run():
            return False
        if not resume:
            raise PPVIError(f"--out {self.out} already holds a training run; pass --resume to continue it "
                            "or choose a new --out")
        stored = self._stored_args()
        changed = sorted(k for k in set(stored) | set(train_args)
                         if k not in RESUMABLE_CHANGES and stored.get(k) != train_args.get(k))
        if changed:
            detail = "; ".join(f"{k}: {stored.get(k)!r} -> {train_args.get(k)!r}" for k in changed[:4])
            raise PPVIError(f"--resume {self.out}: the run was started with other arguments ({detail}); "
                            "repeat its arguments (see run.json) or choose a new --out")
        return True

    def open(self, train_args: dict, inputs: dict) -> RunFolder:
        """Take the folder for this run (the writing process only): identity, lock, foreign files refused."""
        identity = {"command": "train reid", **{k: v for k, v in train_args.items() if k not in RESUMABLE_CHANGES}}
        self.folder = RunFolder(self.out, identity, inputs=inputs, owns=lambda rel: bool(_RUN_FILES.match(rel)),
                                overwrite_flag=None)
        self.folder.__enter__()
        return self.folder

    def close(self) -> None:
        if self.folder is not None:
            self.folder.__exit__(None, None, None)
            self.folder = None

    def trusted(self, path: Path) -> Path:
        """`path` (a file of this run) when it still holds what the run wrote; PPVIError otherwise."""
        if self.folder is not None and not self.folder.finished(path.name):
            raise PPVIError(f"--resume {self.out}: {path.name} is not what this run wrote (changed, or written "
                            "without a record); start a new --out")
        return path

    def _stored_args(self) -> dict:
        if not self.run_json.is_file():
            raise PPVIError(f"--resume {self.out}: run.json is missing, so its arguments are unknown; "
                            "start a new run in a new --out")
        try:
            info = json.loads(self.run_json.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise PPVIError(f"--resume {self.out}: run.json cannot be read ({err}); start a new --out") from err
        if not isinstance(info, dict) or info.get("format") != RUN_FORMAT or not isinstance(info.get("params"), dict):
            raise PPVIError(f"--resume {self.out}: run.json is not a ppvi training run")
        return info["params"]

    def start(self, train_args: dict, seed: int) -> None:
        self.write_json(self.run_json, {"format": RUN_FORMAT, **stamp(seed, train_args)})

    def load_state(self, epoch: int, weights_sha256: str) -> dict:
        """The resume state saved with the checkpoint of `epoch`; PPVIError when absent or not matching."""
        path = self.state(epoch)
        if not path.is_file():
            raise PPVIError(f"--resume {self.out}: {path.name} (optimizer state for last.pt's epoch {epoch}) "
                            "is missing; cannot continue exactly, start a new --out")
        state = read_torch_file(self.trusted(path), f"--resume {path}")
        if not isinstance(state, dict) or state.get("epoch") != epoch or state.get("weights_sha256") != weights_sha256:
            raise PPVIError(f"--resume {path}: does not belong to last.pt (epoch or weights differ); "
                            "start a new --out")
        return state

    def save_state(self, epoch: int, state: dict) -> None:
        self.folder.write(self.state(epoch).name, lambda fh: torch.save({"epoch": epoch, **state}, fh))

    def save_checkpoint(self, write) -> None:
        """`write(path)` writes last.pt (e.g. `models.checkpoint.save_checkpoint`); listed like every file."""
        self.folder.produce(self.last.name, write)

    def drop_states_before(self, epoch: int) -> None:
        old = [p.name for p in self.out.glob("state-*.pt")
               if p.stem.split("-", 1)[1].isdigit() and int(p.stem.split("-", 1)[1]) < epoch]
        self.folder.commit([], removed=old)

    def read_log(self, through_epoch: int) -> list[dict]:
        """Log lines of epochs 1..`through_epoch` (a killed run may have logged an epoch it did not save)."""
        if not self.log.is_file():
            return []
        rows = [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [r for r in rows if r.get("epoch", 0) <= through_epoch]

    def write_log(self, rows: list[dict]) -> None:
        self.folder.write_text(self.log.name, "".join(json.dumps(r) + "\n" for r in rows))

    def write_json(self, path: Path, data: dict) -> None:
        self.folder.write_text(path.name, json.dumps(data, indent=2, default=str) + "\n")
