"""`fedsurv demo`: a synthetic sarcoma consortium run end to end on the study plan."""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

import click

from fedsurv.commands.run import execute
from fedsurv.demo_data import CENTERS, write_demo_consortium
from fedsurv.groups import root
from fedsurv.site_input import SiteInput


def example_plan(name: str = "sarcoma.toml") -> Path:
    return Path(str(files("fedsurv") / "examples" / name))


@root.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("fedsurv-demo"),
              show_default=True, help="Folder for the synthetic data, the results and the report.")
@click.option("--in-process", is_flag=True, help="Run every site in this process instead of over Flower.")
@click.option("--seed", type=int, default=35, show_default=True)
def demo_command(out: Path, in_process: bool, seed: int) -> None:
    """Generate a synthetic consortium of sarcoma centers and run the study plan over it."""
    data_dir = out / "data"
    click.echo(f"writing a synthetic consortium of {len(CENTERS)} centers to {data_dir}", err=True)
    files_ = write_demo_consortium(data_dir, seed=seed)
    plan_path = out / "plan.toml"
    shutil.copyfile(example_plan(), plan_path)
    sites = [SiteInput(name, data, mapping) for name, (data, mapping) in files_.items()]
    if in_process:
        execute(plan_path, sites, out, audit_dir=out / "audit")
        return
    from fedsurv.deployment import run_demo_over_flower

    run_demo_over_flower(plan_path, sites, out, progress=lambda m: click.echo(m, err=True))
