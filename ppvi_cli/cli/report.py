"""`ppvi report`: one privacy-utility report from the run folders of several methods.

A RUN_DIR holds run.json, eval.json, privacy.json, chaos.json and/or attack.json (each optional);
`ppvi_cli.report.tables` defines the contract and reads them.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.common import emit


@app.command("report")
def report(
    ctx: typer.Context,
    run_dirs: list[Path] = typer.Argument(..., help="One folder per method and dataset (what it holds: above)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.json, report.html, privacy_utility.png and "
                             "the grids."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a report in --out made from other RUN_DIRs "
                                   "(or files no record covers)."),
) -> None:
    """Put privacy and utility side by side: tables per dataset, a scatter plot, image grids, one HTML page.

    Each RUN_DIR holds any of these (a missing one shows as "-"; at least one is needed):
    run.json: {"method", "dataset", "anon": path, "raw": path};
    eval.json: the output of `ppvi --json eval ... --setting all`;
    privacy.json: `ppvi --json privacy`; chaos.json: `ppvi --json chaos`;
    attack.json: written by `ppvi attack --out RUN_DIR` (every attacker and the worst case over them).
    Method and dataset come from run.json, else the anonymized folder's manifest.json and the raw folder's name.
    The HTML page is self-contained (images inlined): fit to mail or archive; paths in it and in
    report.json are relative to --out. --out is a run folder owned by its RUN_DIRs: a report from
    other RUN_DIRs into it is refused unless --overwrite.
    """
    from ppvi_cli.report.attacks import ATTACKER_COLUMNS, attacker_cells
    from ppvi_cli.report.tables import PRIVACY_COLUMNS, UTILITY_COLUMNS, make_report, table_cells

    doc = make_report(run_dirs, out, overwrite=overwrite)

    def human(console):
        for name, entry in doc["datasets"].items():
            cells = [table_cells(row) for row in entry["rows"]]
            split = len(UTILITY_COLUMNS)
            for title, columns, part in ((f"dataset {name}: utility", UTILITY_COLUMNS, lambda c: c[:split]),
                                         (f"dataset {name}: privacy", PRIVACY_COLUMNS, lambda c: c[:1] + c[split:])):
                table = Table(title=title)
                for col in columns:
                    table.add_column(col, justify="left" if col == "method" else "right")
                for row in cells:
                    table.add_row(*part(row))
                console.print(table)
            attackers = [c for row in entry["rows"] for c in attacker_cells(row)]
            if attackers:
                table = Table(title=f"dataset {name}: attackers")
                for col in ATTACKER_COLUMNS:
                    table.add_column(col, justify="left" if col in ("method", "attacker") else "right")
                for row in attackers:
                    table.add_row(*row)
                console.print(table)
        console.print("R1/mAP/mINP in percent; SSIM/PSNR protected vs raw; AD chaos; worst = the highest recovered "
                      "SSIM/PSNR and linkage rank-1 over the attackers run; means over all images; '-' = missing")
        for note in doc["notes"]:
            console.print(f"note: {note}")
        run = doc["run"]
        console.print(f"ppvi {run['ppvi_version']}, torch {run['versions'].get('torch', '?')}; "
                      f"html {out / doc['html']}; json {out / doc['json']}; plot {out / doc['plot']}")

    emit(ctx, doc, human)
