"""RegDB: `Visible/<id>/<file>.bmp` and `Thermal/<id>/<file>.bmp`, split by the official idx lists.

`idx/{train,test}_{visible,thermal}_{trial}.txt` (10 trials) hold lines such as
`Visible/285/male_back_v_05528_285.bmp 0`: the image path and a 0-based label local to that list.
ppvi takes the pid from the folder (285), not the label, so a person keeps one pid in both
modalities, both splits and every trial.
"""

from __future__ import annotations

from pathlib import Path

from ppvi_cli.data.records import INFRARED, VISIBLE, Dataset, Record
from ppvi_cli.errors import PPVIError

TRIALS = range(1, 11)
SPLITS = ("train", "test")
KINDS = ("visible", "thermal")  # the idx files' words for the two modalities
KIND_DIR = {"visible": "Visible", "thermal": "Thermal"}
KIND_MODALITY = {"visible": VISIBLE, "thermal": INFRARED}
# RegDB has one camera per modality; these camids let protocols tell the two apart.
KIND_CAMID = {"visible": 1, "thermal": 2}
LAYOUT = "Visible/<id>/*.bmp, Thermal/<id>/*.bmp and idx/{train,test}_{visible,thermal}_<trial>.txt"


def idx_file(split: str, kind: str, trial: int) -> str:
    """Path of one split list, relative to the root."""
    return f"idx/{split}_{kind}_{trial}.txt"


def pid_of(relpath: str) -> int:
    """The person id of `Visible/<id>/<file>` or `Thermal/<id>/<file>`."""
    return int(relpath.split("/")[1])


def modality_of(relpath: str) -> str:
    """The modality a path implies by its top folder (for images in no idx list)."""
    return INFRARED if relpath.split("/", 1)[0] == KIND_DIR["thermal"] else VISIBLE


def looks_like(root: Path) -> bool:
    return any((root / d).is_dir() for d in ("Visible", "Thermal", "idx"))


def _check_trial(trial) -> int:
    if isinstance(trial, str) and trial.strip().isdigit():
        trial = int(trial)
    if not isinstance(trial, int) or isinstance(trial, bool) or trial not in TRIALS:
        raise PPVIError(f"regdb trial must be an integer 1..10, got {trial!r}")
    return trial


def _read_idx(root: Path, relpath: str, kind: str) -> list[tuple[str, int]]:
    expected = f"'{KIND_DIR[kind]}/<id>/<file>.bmp <label>'"
    entries = []
    for lineno, line in enumerate((root / relpath).read_text(encoding="utf-8-sig").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        parts = fields[0].replace("\\", "/").split("/")
        if (len(fields) != 2 or not fields[1].isdigit() or len(parts) != 3 or parts[0] != KIND_DIR[kind]
                or not parts[1].isdigit()):
            raise PPVIError(f"regdb at {root}: {relpath} line {lineno} reads {line.strip()!r}; expected {expected}")
        entries.append(("/".join(parts), int(fields[1])))
    return entries


DEFAULT_TRIAL = 1  # the split trial of the idx files read when none is asked for


def read_regdb_split(root: str | Path, trial: int = DEFAULT_TRIAL) -> dict[str, list[tuple[str, int]]]:
    """Parse one trial's idx lists without touching any image.

    Returns `{"train_visible", "train_thermal", "test_visible", "test_thermal"}` -> list of
    `(relpath, label)` in file order; the label is the list's own 0-based one (use `pid_of` for the pid).
    """
    root, trial = Path(root), _check_trial(trial)
    missing = [idx_file(s, k, trial) for s in SPLITS for k in KINDS if not (root / idx_file(s, k, trial)).is_file()]
    if missing:
        raise PPVIError(f"regdb at {root}: missing {', '.join(missing)}; expected {LAYOUT}")
    return {f"{s}_{k}": _read_idx(root, idx_file(s, k, trial), k) for s in SPLITS for k in KINDS}


def read(root: Path, *, trial: int = DEFAULT_TRIAL) -> Dataset:
    """Splits train and test of one trial, each visible records (camid 1) then thermal ones (camid 2).

    Modality `infrared` for thermal. Listed images that are missing are a note; when every image of
    a modality is missing the trial cannot be evaluated, so that is an error naming the lists.
    """
    trial = _check_trial(trial)
    lists = read_regdb_split(root, trial)
    splits: dict[str, list[Record]] = {s: [] for s in SPLITS}
    notes, fatal = [f"splits of trial {trial} (idx/*_{trial}.txt)"], []
    for kind in KINDS:
        lost = {}
        for split in SPLITS:
            entries = lists[f"{split}_{kind}"]
            gone = [p for p, _ in entries if not (root / p).is_file()]
            lost[idx_file(split, kind, trial)] = (gone, len(entries))
            missing = set(gone)
            splits[split] += [Record(p, pid_of(p), KIND_CAMID[kind], KIND_MODALITY[kind], root)
                              for p, _ in entries if p not in missing]
        messages = [f"{len(gone)} of {n} {kind} images listed in {rel} are missing, e.g. {gone[0]}"
                    for rel, (gone, n) in lost.items() if gone]
        if sum(len(g) for g, _ in lost.values()) == sum(n for _, n in lost.values()) > 0:
            absent_dir = "" if (root / KIND_DIR[kind]).is_dir() else f" ({KIND_DIR[kind]}/ does not exist)"
            fatal.append(f"no {kind} images{absent_dir}: " + "; ".join(messages))
        else:
            notes += messages
    if fatal:
        raise PPVIError(f"regdb at {root}: {'; '.join(fatal)}; expected {LAYOUT}")
    metadata = sorted(f"idx/{p.name}" for p in (root / "idx").iterdir() if p.is_file() and not p.name.startswith("."))
    return Dataset("regdb", root, splits, metadata=metadata, notes=notes)
