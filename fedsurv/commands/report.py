"""``fedsurv report RESULTS_DIR``: the HTML report and per-analysis CSV files of a run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from fedsurv.groups import root


@root.command("report")
@click.argument("results_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--svg", "svg", is_flag=True, help="Embed the figures as inline SVG instead of PNG.")
@click.option("--no-censor-marks", is_flag=True, help="Leave censoring marks off the Kaplan-Meier curves.")
@click.option("--no-stacked", is_flag=True, help="Leave out the stacked views of competing causes.")
def report_command(results_dir: Path, svg: bool, no_censor_marks: bool, no_stacked: bool) -> None:
    """Write RESULTS_DIR/report.html and a CSV per analysis from RESULTS_DIR/results.json."""
    from coordinator.report_html import write_report

    source = results_dir / "results.json"
    if not source.is_file():
        raise click.ClickException(f"no results.json in {results_dir} (write one with `fedsurv run ... --out "
                                   f"{results_dir}`)")
    try:
        results = json.loads(source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise click.ClickException(f"{source} is not valid JSON ({e})") from None
    start = time.monotonic()

    def progress(msg: str) -> None:
        click.echo(f"  [{time.monotonic() - start:5.1f} s] {msg}", err=True)

    click.echo(f"writing the report of {source}", err=True)
    path = write_report(results, results_dir, figure_format="svg" if svg else "png",
                        censor_marks=not no_censor_marks, stacked=not no_stacked, progress=progress)
    n_csv = len(results.get("analyses") or {})
    click.echo(f"wrote {path} and {n_csv} CSV file{'s' if n_csv != 1 else ''} in {time.monotonic() - start:.1f} s")
