"""`cricket evaluate`: measure detection quality (NAB)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from cricket.cli import app

evaluate_app = typer.Typer(help="Measure detection quality on labelled benchmarks.")
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.command("nab")
def nab(
    data: Path = typer.Option(
        ..., "--data", help="NAB-layout folder: data/<category>/<file>.csv and labels/"
    ),
    out: Path = typer.Option(..., "--out", help="where the NAB results files are written"),
    name: str = typer.Option("cricket", "--name", help="detector name (no '_')"),
    processes: int = typer.Option(0, "--processes", help="worker processes (0: one per core)"),
) -> None:
    """Run the detector causally over every file, write NAB results files and print the
    normalised score per profile (JSON on the last line)."""
    from cricket.evaluate.nab import load_corpus
    from cricket.evaluate.runner import run_corpus, write_results

    if "_" in name:
        raise typer.BadParameter(f"{name!r} contains '_': NAB splits file names on it")
    try:
        files = load_corpus(data)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{len(files)} files, {sum(len(f.windows) for f in files)} labelled windows")
    run = run_corpus(files, processes=processes or None)
    root = write_results(files, run, out, name)
    typer.echo(f"results files: {root}")
    for prof, r in run.results.items():
        typer.echo(
            f"{prof:<20} {r.normalized:6.2f}  (threshold {r.threshold:.4f}, "
            f"{r.tp} windows hit, {r.fn} missed, {r.fp} false positives)"
        )
    summary = {prof: round(r.normalized, 2) for prof, r in run.results.items()}
    summary["seconds"] = round(run.seconds, 1)
    typer.echo(json.dumps(summary))
