"""`citybrain demo up`: generate a synthetic Shandong and serve it as 17 nodes on localhost."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from citybrain.core.errors import BadInput
from citybrain.demo import service
from citybrain.web.pages import dashboard_url

app = typer.Typer(no_args_is_help=True)


@app.command("up")
def up(
    scale: float = typer.Option(0.001, help="fraction of the real population to generate"),
    seed: int = typer.Option(1, help="seed of the synthetic data"),
    root: Path = typer.Option(Path(".demo"), "--dir", help="folder for data and logs"),
    port: int = typer.Option(8000, help="port of the province node; cities take the next 16"),
    counties_of: str | None = typer.Option(None, help="also run the county nodes of this city"),
    exit_when_ready: bool = typer.Option(False, help="stop the nodes once all are healthy"),
    life: bool = typer.Option(True, help="simulate hotline calls, device alarms and casework"),
) -> None:
    """Generate (or reuse) a synthetic Shandong and serve the province and its 16 cities."""
    if not 1024 <= port <= 65000:
        raise BadInput(f"--port {port} is outside 1024-65000")
    console = Console()
    with _progress(console) as progress:
        task = progress.add_task("synthetic Shandong", total=None)

        def tick(label: str, done: int, total: int) -> None:
            progress.update(task, description=f"synth {label}", completed=done, total=total)

        synth_dir = service.ensure_synthetic(root=root, scale=scale, seed=seed, progress=tick)
    specs = service.plan_nodes(root=root, synth_dir=synth_dir, port=port, counties_of=counties_of)
    service.check_ports_free(specs)
    service.exchange_keys(specs)
    procs = service.start_nodes(specs=specs, log_dir=root / "logs")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with _progress(console) as progress:
            task = progress.add_task("starting nodes", total=len(specs))
            service.wait_healthy(
                specs=specs, procs=procs, on_ready=lambda _s: progress.advance(task)
            )
        registered = service.wait_registered(province=specs[0], expected=16)
        _print_nodes(console, specs)
        console.print(f"{registered} city nodes registered with the province.")
        url = dashboard_url(base_url=specs[0].url, data_dir=specs[0].data_dir, code=specs[0].code)
        console.print(f"Dashboard: [bold]{url}[/bold]   (Ctrl-C stops every node)", soft_wrap=True)
        if not exit_when_ready:
            with console.status("opening the 2027 enrollment season at the cities"):
                opened = service.open_enrollment_seasons(specs)
            console.print(f"Enrollment: the season is open at {opened} cities (/m/enrollment).")
            with console.status("computing indicators at the cities, rolling them up"):
                summary = service.compute_and_rollup(specs)
            console.print(
                f"Indicators: {summary['cities']} cities computed, the province rolled up "
                f"{summary['stored']} values"
                + (f" (missing: {', '.join(summary['missing'])})" if summary["missing"] else "")
                + (f"; {summary['failed']} computations failed" if summary["failed"] else "")
            )
            if life:
                from citybrain.demo.life import run_life

                threading.Thread(target=run_life, args=(specs, stop), daemon=True).start()
                console.print("City life: hotline calls, bin alarms and casework every second.")
            while not stop.is_set() and all(p.poll() is None for p in procs):
                stop.wait(1.0)
            dead = [s.code for s, p in zip(specs, procs, strict=True) if p.poll() is not None]
            if dead and not stop.is_set():
                console.print(f"[red]node(s) {', '.join(dead)} stopped; see {root / 'logs'}[/red]")
    finally:
        stop.set()  # ends the city life with the nodes
        service.stop_nodes(procs)
        console.print("All nodes stopped.")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _print_nodes(console: Console, specs: list[service.NodeSpec]) -> None:
    table = Table("code", "level", "url", "data")
    for spec in specs:
        table.add_row(spec.code, spec.level, spec.url, str(spec.data_dir))
    console.print(table)
