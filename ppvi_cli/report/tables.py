"""The privacy-utility report: what a method's RUN_DIR holds, read into one row per method and dataset.

A RUN_DIR is one protection method on one dataset: a folder holding the JSON documents the
commands print or write. Every file is optional (a missing one shows as "-"), but a RUN_DIR must
hold at least one of them:
- `run.json`: `{"method": ..., "dataset": ..., "anon": path, "raw": path}` (any key may be left out);
- `eval.json`: the output of `ppvi --json eval ... --setting all` (rank-1/mAP/mINP per setting);
- `privacy.json`: `ppvi --json privacy --raw R --anon A` (SSIM/PSNR of protected vs raw);
- `chaos.json`: `ppvi --json chaos A` (Anderson-Darling chaos of the protected images);
- `attack.json`: written by `ppvi attack --out RUN_DIR` (every attacker's figures and the worst case:
  recovered SSIM/PSNR vs raw, linkage rank-1; `report/attacks.py`).
The method is run.json's, else the one in the anonymized set's `manifest.json` (its folder taken from
run.json, attack.json, privacy.json or chaos.json), else the folder name. The dataset is run.json's,
else the name of the raw folder those files name. Rows are grouped by dataset, one table each.
Overall SSIM/PSNR/AD are means over all images (per-modality means are kept in `report.json`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ppvi_cli.errors import PPVIError
from ppvi_cli.jsonsafe import json_safe
from ppvi_cli.report.attacks import ATTACKER_COLUMNS, attack_section, attacker_cells, worst_cells, worst_recovered

RUN_FILES = ("run.json", "eval.json", "privacy.json", "chaos.json", "attack.json")
SETTINGS = ("raw2raw", "raw2anon", "anon2raw", "anon2anon")
EVAL_METRICS = ("rank1", "mAP", "mINP")
UTILITY_SETTINGS = ("raw2anon", "anon2anon")  # the plot's y: the authorized model on protected images
WORST_COLUMNS = ("worst recovered SSIM", "worst recovered PSNR", "worst linkage R1")
COLUMNS = ("method", *(f"{s} R1/mAP/mINP" for s in SETTINGS), "SSIM", "PSNR", "AD", *WORST_COLUMNS)
UTILITY_COLUMNS = COLUMNS[:1 + len(SETTINGS)]  # a terminal shows these and the rest as two tables
PRIVACY_COLUMNS = COLUMNS[:1] + COLUMNS[1 + len(SETTINGS):]
MISSING = "-"


def _check_numbers(value, path: Path, where: str):
    """PPVIError unless every leaf of `value` (a dict of numbers or dicts of them) is a number or null."""
    if isinstance(value, dict):
        for key, inner in value.items():
            _check_numbers(inner, path, f"{where}.{key}")
    elif value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise PPVIError(f"{path}: {where} is {value!r}, not a number; re-run the command that writes it")
    return value


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PPVIError(f"{path}: not readable JSON ({exc}); re-run the command that writes it") from None
    if not isinstance(doc, dict):
        raise PPVIError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _need(doc: dict, path: Path, key: str, shape: str):
    if not isinstance(doc.get(key), dict):
        raise PPVIError(f"{path}: no {key!r} object; expected {shape}")
    return _check_numbers(doc[key], path, key)


def _overall(doc: dict, keys: Sequence[str]) -> dict:
    """Mean over all images (null PSNR = identical = inf; null AD = constant image, left out)."""
    images = doc.get("images") or []
    out = {}
    for key in keys:
        if images:
            values = [r.get(key) for r in images]
            values = [np.inf if v is None and "psnr" in key else v for v in values]
            values = [v for v in values if v is not None]
        else:  # a document without per-image rows: the mean of its modality means
            means = doc.get("mean", {}).values()
            values = [m.get(key) if isinstance(m, dict) else m for m in means]
            values = [v for v in values if v is not None]
        mean = float(np.mean(values)) if values else None
        out[key] = mean if mean is None or np.isfinite(mean) else None
    return out


def _eval_section(doc: dict, path: Path) -> dict:
    results = doc.get("results")
    if not isinstance(results, dict) or not all(isinstance(results[s], dict) for s in SETTINGS if s in results):
        raise PPVIError(f"{path}: no 'results' object of settings; expected the output of "
                        "`ppvi --json eval ... --setting all`")
    settings = {s: {m: results[s].get(m) for m in EVAL_METRICS} for s in SETTINGS if s in results}
    return {"protocol": doc.get("protocol"), "settings": _check_numbers(settings, path, "results")}


def _manifest(anon: str | None) -> dict:
    if not anon:
        return {}
    try:
        return _read_json(Path(anon) / "manifest.json") or {}
    except PPVIError:
        return {}


def load_run(run_dir: str | Path) -> dict:
    """One RUN_DIR as a report row: method, dataset, paths, and the eval/privacy/chaos/attack sections.

    A section is None when its file is absent; `missing` names those files.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PPVIError(f"RUN_DIR {run_dir} is not a directory")
    docs = {name: _read_json(run_dir / name) for name in RUN_FILES}
    if not any(docs.values()):
        raise PPVIError(f"RUN_DIR {run_dir} holds none of {', '.join(RUN_FILES)}: pass the folders the commands "
                        "wrote into (see `ppvi report --help`)")
    run, ev, privacy, chaos, attack = (docs[n] or {} for n in RUN_FILES)
    anon = run.get("anon") or attack.get("anon") or privacy.get("anon") or chaos.get("root")
    manifest = _manifest(anon)
    raw = run.get("raw") or attack.get("raw") or privacy.get("raw") or manifest.get("input")
    row = {
        "run_dir": str(run_dir),
        "method": run.get("method") or manifest.get("method") or attack.get("method") or run_dir.name,
        "params": manifest.get("params") or attack.get("method_params"),
        "dataset": run.get("dataset") or (Path(raw).resolve().name if raw else MISSING),
        "raw": raw, "anon": anon,
        "format": attack.get("format") or privacy.get("format") or manifest.get("format") or "auto",
        "missing": [n for n in RUN_FILES if docs[n] is None],
        "eval": _eval_section(ev, run_dir / "eval.json") if ev else None,
        "privacy": None, "chaos": None, "attack": None,
    }
    if privacy:
        row["privacy"] = {"mean": _need(privacy, run_dir / "privacy.json", "mean", "`ppvi --json privacy` output"),
                          "overall": _overall(privacy, ("ssim", "psnr"))}
    if chaos:
        means = _need(chaos, run_dir / "chaos.json", "mean", "`ppvi --json chaos` output")
        row["chaos"] = {"mean": means, "overall": _overall(chaos, ("ad",))["ad"]}
    for key in ("anon", "raw"):
        if row[key] is not None and not isinstance(row[key], str):
            raise PPVIError(f"RUN_DIR {run_dir}: its {key!r} path is {row[key]!r}, not a string")
    if attack:
        row["attack"] = attack_section(attack, run_dir / "attack.json")
    return row


def group_by_dataset(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows per dataset, datasets and rows in the order given.

    A method that appears twice in a dataset (e.g. blur at two radii) gets its parameters (or its
    RUN_DIR's name) appended to its `method` label, so table rows and plot points stay apart.
    """
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["dataset"], []).append(row)
    for group in groups.values():
        names = [r["method"] for r in group]
        for row in group:
            if names.count(row["method"]) > 1:
                params = ", ".join(f"{k}={v}" for k, v in (row["params"] or {}).items())
                row["method"] = f"{row['method']} ({params or Path(row['run_dir']).name})"
    return groups


def _num(value, digits: int, none: str) -> str:
    return none if value is None else f"{value:.{digits}f}"


def table_cells(row: dict) -> list[str]:
    """The row's cells under COLUMNS: percent for retrieval, "-" for a missing file, "inf" for identical images."""
    cells = [row["method"]]
    settings = (row["eval"] or {}).get("settings", {})
    for name in SETTINGS:
        res = settings.get(name)
        cells.append("/".join(_num(res.get(m), 1, "nan") for m in EVAL_METRICS) if res else MISSING)
    privacy, chaos, attack = row["privacy"], row["chaos"], row["attack"]
    cells += [_num(privacy["overall"]["ssim"], 3, "nan") if privacy else MISSING,
              _num(privacy["overall"]["psnr"], 2, "inf") if privacy else MISSING,
              _num(chaos["overall"], 1, "nan") if chaos else MISSING,
              *worst_cells(attack["overall"] if attack else None)]
    return cells


def modality_cells(row: dict) -> list[list[str]]:
    """Per-modality detail rows under MODALITY_COLUMNS (the worst case of that modality's images/queries)."""
    privacy, chaos, attack = row["privacy"], row["chaos"], row["attack"]
    modalities = sorted({m for sec in (privacy, chaos, attack) if sec for m in sec["mean"]})
    out = []
    for m in modalities:
        p = (privacy or {}).get("mean", {}).get(m)
        ad = (chaos or {}).get("mean", {}).get(m, MISSING)
        out.append([row["method"], m, _num(p["ssim"], 3, "nan") if p else MISSING,
                    _num(p["psnr"], 2, "inf") if p else MISSING, ad if ad == MISSING else _num(ad, 1, "nan"),
                    *worst_cells((attack or {}).get("mean", {}).get(m))])
    return out


MODALITY_COLUMNS = ("method", "modality", "SSIM", "PSNR", "AD", *WORST_COLUMNS)


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "dataset"


def dataset_grid(rows: list[dict],
                 shown: Callable[[str | Path], str] = str) -> tuple[Callable[[Path], Path] | None, str]:
    """Raw, each method's protected images and (after it) its recovered ones, for a few test records.

    Columns are numbered (a grid label has room for a few characters only). Returns (a function that
    draws the grid to a PNG path, its caption naming the numbers), or (None, why no grid could be
    drawn). `shown` renders a path for a message (the report shows paths relative to itself).
    """
    from ppvi_cli.data.inputs import collect_inputs
    from ppvi_cli.report.grids import method_grid, pick_examples

    raws = list(dict.fromkeys(r["raw"] for r in rows if r["raw"]))
    if not raws:
        return None, "no raw dataset folder named (add \"raw\" to run.json) for an image grid"
    raw = Path(raws[0])
    if not raw.is_dir():
        return None, f"raw folder {shown(raw)} not found here; no image grid"
    columns: dict[str, Path] = {"raw": raw}
    legend = []
    for i, row in enumerate(rows, 1):
        recovered = worst_recovered(row["attack"])
        for label, root in ((f"{i} {row['method']}", row["anon"]), (f"{i} rec", recovered)):
            if root and Path(root).is_dir():
                columns[label] = Path(root)
        legend.append(f"{i} = {row['method']}")
    if len(columns) == 1:
        return None, "no protected or recovered folder found here; no image grid"
    try:
        fmt = rows[0]["format"]
        records = collect_inputs(raw, "auto" if fmt == "any" else fmt).records  # "any": a plain folder of images
    except PPVIError as exc:
        return None, f"cannot read {shown(raw)} for the image grid: {exc}"
    shared = [r for r in records if all((root / r.relpath).is_file() for root in columns.values())]
    if not shared:
        return None, "no image is present in every folder; no image grid"
    caption = (f"raw, then each method's protected images and, where it was attacked, the recovered images of "
               f"its worst-case (highest SSIM) attacker (rec), for a few test images; {'; '.join(legend)}")
    examples = pick_examples(shared, per_modality=2)
    return (lambda out_png: method_grid(examples, columns, out_png)), caption


def _plot_points(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """One point per method: its worst-case overall ssim/rank1 and its raw2anon/anon2anon mAP."""
    points, left_out = [], []
    for row in rows:
        worst = (row["attack"] or {}).get("overall", {})
        settings = (row["eval"] or {}).get("settings", {})
        point = {"label": row["method"], "dataset": row["dataset"], "ssim": worst.get("ssim"),
                 "rank1": worst.get("rank1"), **{s: (settings.get(s) or {}).get("mAP") for s in UTILITY_SETTINGS}}
        if all(point[k] is None for k in ("ssim", "rank1")) or all(point[k] is None for k in UTILITY_SETTINGS):
            left_out.append(f"{row['method']} ({row['dataset']})")
        else:
            points.append(point)
    return points, left_out


def _caption(rows: list[dict]) -> str:
    protocols = sorted({r["eval"]["protocol"] for r in rows if r["eval"] and r["eval"].get("protocol")})
    sizes = sorted({"x".join(map(str, r["attack"]["working_size"])) for r in rows
                    if r["attack"] and r["attack"].get("working_size")})
    return (f"R1/mAP/mINP in percent (protocol {', '.join(protocols) or MISSING}); SSIM/PSNR: protected vs raw "
            f"(ppvi privacy, native size); AD: Anderson-Darling chaos of the protected images (ppvi chaos, lower "
            f"= more chaotic); worst recovered: the highest SSIM/PSNR of any recovery attacker's output vs raw at "
            f"{', '.join(sizes) or MISSING}, worst linkage R1: the linkage attacker's protected -> raw rank-1, % "
            "(ppvi attack). Means over all images; '-' = file or attacker missing; lower = more private.")


REPORT_FILES = ("report.html", "report.json", "privacy_utility.png")


def make_report(run_dirs: Sequence[str | Path], out: str | Path, overwrite: bool = False) -> dict:
    """Read RUN_DIRS and write into `out`: report.json, report.html, privacy_utility.png, grid_<dataset>.png.

    Returns the report document (what report.json holds): `datasets` {name: {"rows", "grid"}},
    `columns`, `plot`, `html`, `notes` and the `run` stamp. `out` is a run folder
    (`ppvi_cli.runfolder`) owned by this list of RUN_DIRS; paths in the report are relative to `out`,
    so neither page nor JSON embeds an absolute local path.
    """
    from ppvi_cli.report import html
    from ppvi_cli.report.plots import privacy_utility_plot
    from ppvi_cli.runfolder import RunFolder
    from ppvi_cli.runinfo import stamp

    if not run_dirs:
        raise PPVIError("give at least one RUN_DIR")
    out = Path(out)
    identity = {"command": "report", "run_dirs": [str(Path(d).resolve()) for d in run_dirs]}
    folder = RunFolder(out, identity, inputs={f"RUN_DIR {d}": d for d in run_dirs}, overwrite=overwrite,
                       owns=lambda rel: rel in REPORT_FILES or (rel.startswith("grid_") and rel.endswith(".png")))
    rows = [load_run(d) for d in run_dirs]
    home = out.expanduser().resolve()

    def shown(path: str | Path) -> str:
        return os.path.relpath(Path(path).expanduser().resolve(), home)

    for row in rows:
        for key in ("run_dir", "raw", "anon"):
            row[key] = None if row[key] is None else shown(row[key])
        for section in ((row["attack"] or {}).get("attackers") or {}).values():
            if section.get("recovered"):
                section["recovered"] = shown(section["recovered"])
    with folder:
        notes, datasets = [], {}
        for name, group in group_by_dataset(rows).items():
            draw, text = dataset_grid([{**r, "raw": _under(home, r["raw"]), "anon": _under(home, r["anon"]),
                                        "attack": _attack_here(home, r["attack"])} for r in group], shown)
            grid = None
            if draw is None:
                notes.append(f"{name}: {text}")
            else:
                grid = f"grid_{slug(name)}.png"
                folder.produce(grid, draw)
            datasets[name] = {"rows": group, "grid": grid, "grid_caption": text if grid else None}
        points, left_out = _plot_points(rows)
        if left_out:
            notes.append("not in the privacy-utility plot (no attack.json, or no raw2anon/anon2anon in eval.json): "
                         + ", ".join(left_out))
        plot = "privacy_utility.png"
        folder.produce(plot, lambda path: privacy_utility_plot(points, path))
        run = stamp(None, {"run_dirs": [shown(d) for d in run_dirs], "out": "."})
        run["command"] = " ".join(["ppvi", "report", *run["params"]["run_dirs"], "--out", "."])
        doc = {"columns": list(COLUMNS), "datasets": datasets, "plot": plot, "html": "report.html",
               "json": "report.json", "notes": notes, "run": run}

        sections = []
        for name, entry in datasets.items():
            inner = (html.html_table(COLUMNS, [table_cells(r) for r in entry["rows"]])
                     + f'<p class="small">{html.escape(_caption(entry["rows"]))}</p>'
                     + html.html_table(MODALITY_COLUMNS, [c for r in entry["rows"] for c in modality_cells(r)]))
            attackers = [c for r in entry["rows"] for c in attacker_cells(r)]
            if attackers:
                inner += html.html_table(ATTACKER_COLUMNS, attackers)
            if entry["grid"]:
                inner += html.figure(out / entry["grid"], entry["grid_caption"])
            sections.append((f"dataset {name}", inner))
        sections.append(("privacy vs utility", html.figure(out / plot, "x: the worst case over the attackers run: "
                                                                         "recovered SSIM, linkage rank-1 (lower = more "
                                                                         "private); y: raw2anon and anon2anon mAP "
                                                                         "(higher = more useful)")))
        runs = [[r["run_dir"], r["method"], ", ".join(f"{k}={v}" for k, v in (r["params"] or {}).items()) or MISSING,
                 ", ".join(r["missing"]) or "none"] for r in rows]
        sections.append(("runs", html.html_table(("RUN_DIR", "method", "params", "missing files"), runs)))
        if notes:
            sections.append(("notes", "".join(f"<p>{html.escape(n)}</p>" for n in notes)))
        footer = [f"ppvi {run['ppvi_version']}, created {run['created']}, command: {run['command']}",
                  "versions: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items())]
        folder.write_text("report.html", html.render_page("ppvi privacy-utility report", sections, footer))
        folder.write_text("report.json", json.dumps(json_safe(doc), indent=1) + "\n")
    return doc


def _under(home: Path, shown: str | None) -> str | None:
    """A path shown relative to the report folder, as a path that can be opened from here."""
    return None if shown is None else str(home / shown)


def _attack_here(home: Path, attack: dict | None) -> dict | None:
    """The row's attack section with each attacker's recovered folder openable from here."""
    if not attack:
        return attack
    return {**attack, "attackers": {name: {**s, "recovered": _under(home, s.get("recovered"))}
                                    for name, s in attack["attackers"].items()}}
