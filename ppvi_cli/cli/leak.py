"""`ppvi leak`: identity leakage of saved features, and the DP-gallery epsilon sweep (PEPR-Net)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ppvi_cli.cli.root import app
from ppvi_cli.cli.choices import Backend, Protocol, Setting, choice_option
from ppvi_cli.cli.common import effective_device, effective_seed, emit, parse_floats, progress_bars
from ppvi_cli.cli.options import constant_note, device_option, seed_option
from ppvi_cli.errors import PPVIError

@app.command("leak")
def leak_command(
    ctx: typer.Context,
    features: Path = typer.Option(..., "--features", help="Saved features (.npz), as `ppvi eval --features` reads."),
    which: str = typer.Option(None, "--which", help="Feature arrays to measure: query_raw, gallery_raw, query_anon, "
                              f"gallery_anon, a comma list, or all {constant_note('evaluation.leakage', 'DEFAULT_WHICH')}. "
                              "Not with --dp-sweep."),
    train_fraction: float = typer.Option(0.5, "--train-fraction", help="Share of each id's images that trains the "
                                         "identity classifier; the rest are scored."),
    epochs: int = typer.Option(None, "--epochs", min=1, help=f"Full-batch classifier epochs {constant_note('metrics.leakage', 'EPOCHS')}."),
    lr: float = typer.Option(None, "--lr", help=f"Classifier Adam learning rate {constant_note('metrics.leakage', 'LR')}."),
    ignore_pid: list[int] = typer.Option(None, "--ignore-pid", help="A pid that is not one person (repeatable), e.g. "
                                         "0 for Market-1501 distractors (the --dp-sweep default under market)."),
    seed: int = seed_option("Seed of the split and the DP noise"),
    device: str = device_option(),
    dp_sweep: bool = typer.Option(False, "--dp-sweep", help="Privatise the setting's gallery with the Gaussian "
                                  "mechanism at each epsilon; report utility and leakage against epsilon."),
    protocol: Protocol = choice_option(None, "--protocol", "-p", help="With --dp-sweep: the evaluation protocol."),
    setting: Setting = choice_option(None, "--setting", "-s", help="With --dp-sweep: the setting (its gallery form "
                                      "gets the noise)."),
    epsilons: str = typer.Option("0.1,0.5,1.0", "--epsilons", help="With --dp-sweep: privacy budgets in (0, 1]."),
    delta: float = typer.Option(1e-5, "--delta", help="With --dp-sweep: DP delta in (0, 1)."),
    sensitivity: float = typer.Option(2.0, "--sensitivity", help="With --dp-sweep: L2 sensitivity Delta; 2 bounds "
                                      "unit-norm features, a smaller value voids the DP guarantee."),
    trials: int = typer.Option(None, "--trials", min=1, help="With --dp-sweep, SYSU: galleries drawn "
                                f"{constant_note('metrics.protocols', 'SYSU_TRIALS')}."),
    backend: Backend = choice_option("auto", "--backend", help="With --dp-sweep: who computes retrieval (all exact; "
                                     "as `ppvi eval --backend`)."),
    plot: Path = typer.Option(None, "--plot", help="With --dp-sweep: write utility and leakage vs epsilon to this PNG."),
) -> None:
    """Identity leakage (PEPR-Net's "ID %"): train a softmax classifier on part of each test id's features
    and report its accuracy on the rest; lower is more private, chance is 100 / ids.

    With --dp-sweep: add Gaussian noise, sigma = Delta * sqrt(2 ln(1.25/delta)) / epsilon per coordinate,
    to the L2-normalised gallery of --setting, and report rank-1, mAP, mINP and the leakage of the noisy
    gallery for no DP and each epsilon (one seed: every epsilon sees the same noise draws, scaled).
    """
    from ppvi_cli.evaluation.leakage import DEFAULT_WHICH, leakage
    from ppvi_cli.metrics.leakage import EPOCHS, LR, check_train_fraction

    check_train_fraction(train_fraction)
    seed = effective_seed(ctx, seed)
    dev = effective_device(ctx, device)
    classifier = {"train_fraction": train_fraction, "epochs": EPOCHS if epochs is None else epochs,
                  "lr": LR if lr is None else lr}
    if dp_sweep:
        if which is not None:
            raise PPVIError("--which does not apply with --dp-sweep: leakage is measured on the (noisy) gallery of "
                            "--setting")
        if protocol is None or setting is None:
            raise PPVIError("--dp-sweep needs --protocol and --setting (e.g. -p market -s raw2raw)")
        if setting == "all":
            raise PPVIError("--dp-sweep takes one --setting (raw2raw, raw2anon, anon2raw or anon2anon), not all")
        eps = parse_floats(epsilons, "--epsilons", "0.1,0.5,1.0")
        if plot is not None:
            from ppvi_cli.runfolder import check_outside_inputs

            check_outside_inputs(plot, {"--features": features}, option="--plot", folder=False)
        _sweep(ctx, features, protocol, setting, eps, delta, sensitivity, seed, dev, classifier, ignore_pid, trials,
               backend, plot)
        return
    for name, value in (("--protocol", protocol), ("--setting", setting), ("--plot", plot), ("--trials", trials)):
        if value is not None:
            raise PPVIError(f"{name} applies only with --dp-sweep")
    with progress_bars(ctx) as on_progress:
        doc = leakage(features, which or DEFAULT_WHICH, classifier, seed, ignore_pids=ignore_pid or (), device=dev,
                      on_progress=on_progress)
    results = doc["results"]

    def human(console):
        table = Table(title=f"ppvi leak {features.name}: identity leakage (lower is more private)")
        for col in ("features", "ids", "train images", "eval images", "ID accuracy %", "chance %", "dropped ids"):
            table.add_column(col, justify="left" if col == "features" else "right")
        for key, res in results.items():
            table.add_row(key, str(res["ids"]), str(res["train_images"]), str(res["eval_images"]),
                          f"{res['accuracy']:.2f}", f"{res['chance']:.2f}", str(res["dropped_ids"]))
        console.print(table)
        console.print(f"split per id, train fraction {train_fraction}, seed {seed}; classifier: "
                      f"{next(iter(results.values()))['params']['classifier']}, {classifier['epochs']} epochs, "
                      f"lr {classifier['lr']}")

    emit(ctx, doc, human)


def _sweep(ctx, features, protocol, setting, epsilons, delta, sensitivity, seed, device, classifier, ignore_pid,
           trials, backend, plot) -> None:
    from ppvi_cli.evaluation.leakage import dp_sweep

    with progress_bars(ctx) as on_progress:
        doc = dp_sweep(features, protocol, setting, epsilons, delta, sensitivity, seed, classifier,
                       ignore_pids=ignore_pid, trials=trials, backend=backend, device=device, plot=plot,
                       on_progress=on_progress)
    outputs = doc["outputs"]

    def human(console):
        table = Table(title=f"ppvi leak --dp-sweep {features.name} -p {protocol} -s {setting}")
        for col in ("epsilon", "sigma", "rank1", "mAP", "mINP", "ID accuracy %", "chance %"):
            table.add_column(col, justify="right")
        for row in doc["rows"]:
            table.add_row("no DP" if row["epsilon"] is None else f"{row['epsilon']:g}", f"{row['sigma']:.3f}",
                          *(f"{row[k]:.2f}" for k in ("rank1", "mAP", "mINP", "leakage", "chance")))
        console.print(table)
        console.print(f"delta {delta:g}, sensitivity {sensitivity:g}, seed {seed}, trials {doc['trials']}; "
                      f"leakage on the gallery: {doc['leakage']['ids']} ids, split per id, train fraction "
                      f"{classifier['train_fraction']}")
        for note in doc["notes"]:
            console.print(f"note: {note}")
        for kind, paths in outputs.items():
            console.print(f"{kind}: {', '.join(paths)}")

    emit(ctx, doc, human)
