"""`citybrain synth`: generate the synthetic province."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from citybrain.core.errors import BadInput
from citybrain.synth import service


def synth(
    scale: float = typer.Option(..., help="fraction of the real population, in (0, 1]"),
    seed: int = typer.Option(..., help="seed; the same seed gives the same files"),
    out: Path = typer.Option(..., help="output folder (one sub-folder per node)"),
    force: bool = typer.Option(False, help="replace a non-empty output folder"),
    cities: str | None = typer.Option(None, help="only these city codes, comma-separated"),
    workers: int | None = typer.Option(None, help="processes (default: up to 2)"),
    abuse_rate: str = typer.Option(
        "0.01",
        help="medical-insurance abuse per pattern, share of eligible insured persons: "
        "0.01, or pattern=rate,... (others 0.01)",
    ),
    care_share: float = typer.Option(
        1.0, help="share of insured persons with a year of care (0: no settlements)"
    ),
) -> None:
    """Generate a synthetic Shandong: Parquet tables per node and department."""
    from citybrain.synth.medical import parse_rates

    try:
        rates = parse_rates(abuse_rate)
    except ValueError as exc:
        raise BadInput(f"--abuse-rate: {exc}") from None
    wanted = [c.strip() for c in cities.split(",") if c.strip()] if cities else None
    if workers is not None and workers < 1:
        raise BadInput("--workers must be at least 1")
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("counties", total=None)

        def tick(label: str, done: int, total: int) -> None:
            progress.update(task, description=f"{label:<24}", completed=done, total=total)

        summary = service.generate(
            scale=scale,
            seed=seed,
            out=out,
            force=force,
            cities=wanted,
            progress=tick,
            workers=workers,
            abuse_rates=rates,
            care_share=care_share,
        )
    console.print(
        f"{summary.residents:,} residents in {len(summary.files)} files under {out} "
        f"(seed {seed}, scale {scale})"
    )


def simulate_devices(
    data: Path = typer.Option(..., "--data", help="a node's synthetic data folder"),
    broker_host: str = typer.Option("127.0.0.1", help="MQTT broker host"),
    broker_port: int = typer.Option(1883, help="MQTT broker port"),
    ticks: int = typer.Option(10, help="readings per device"),
    step: float = typer.Option(60.0, help="seconds of simulated time between readings"),
    seed: int = typer.Option(1, help="seed of the readings"),
    realtime: bool = typer.Option(False, help="wait the step between rounds"),
) -> None:
    """Publish realistic readings of the synthetic sensors to an MQTT broker."""
    from citybrain.synth.devices import publish

    sent = publish(
        data_dir=data,
        host=broker_host,
        port=broker_port,
        ticks=ticks,
        step_seconds=step,
        seed=seed,
        realtime=realtime,
    )
    Console(stderr=True).print(f"published {sent:,} readings")


def register(app: typer.Typer) -> None:
    """Attach `synth` and `synth-devices` to the root command."""
    app.command("synth")(synth)
    app.command("synth-devices")(simulate_devices)
