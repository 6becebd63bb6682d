"""Commands of governance/audit; thin callers of its service."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from citybrain.core.errors import BadInput
from citybrain.governance.audit import service

audit = typer.Typer(no_args_is_help=True)
DATA = typer.Option(..., "--data", help="the node's data folder")
# below this size verify finishes before a progress bar would be worth drawing
PROGRESS_BYTES = 64 * 1024 * 1024


def register(root: typer.Typer) -> None:
    """Attach this part's command groups to the root command."""
    root.add_typer(
        audit, name="audit", help="The hash-chained audit log: verify, list, checkpoint."
    )


def _folder(data: Path) -> Path:
    if not data.is_dir():
        raise BadInput(f"there is no data folder {data}")
    return data


def _moment(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{name} must be an ISO 8601 moment, not {text!r}") from None


@audit.command("verify")
def verify(
    data: Path = DATA,
    workers: int | None = typer.Option(None, min=1, help="processes (default: one per core)"),
) -> None:
    """Re-compute the chain and check the signed checkpoints; exit 1 at the first break."""
    data_dir = _folder(data)
    path = service.log_path(data_dir)
    size = path.stat().st_size if path.exists() else 0
    err = Console(stderr=True)
    if size >= PROGRESS_BYTES and err.is_terminal:
        with Progress(
            "verifying",
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("verify", total=size)
            report = service.verify(
                data_dir=data_dir,
                workers=workers,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    else:
        report = service.verify(data_dir=data_dir, workers=workers)
    service.append(
        data_dir=data_dir,
        principal=None,
        action="audit.read",
        resource="audit/verify",
        result="ok" if report.ok else "broken",
        rows=report.records,
        detail={"via": "cli", "first_broken_seq": report.first_broken_seq},
    )
    if report.torn_tail:
        err.print(
            f"warning: torn last line, never acknowledged: {report.torn_tail}", highlight=False
        )
    if report.ok:
        typer.echo(
            f"ok: {report.records:,} records, {report.checkpoints:,} signed checkpoints, "
            f"chain holds up to seq {report.last_seq} ({report.seconds:.1f} s)"
        )
        return
    typer.echo(f"broken at seq {report.first_broken_seq}, line {report.line}: {report.reason}")
    raise typer.Exit(code=1)


@audit.command("list")
def list_records(
    data: Path = DATA,
    actor: str | None = typer.Option(None, help="org/role/subject"),
    org: str | None = typer.Option(None),
    action: str | None = typer.Option(None, help="exact, or a prefix ending in *"),
    resource: str | None = typer.Option(None, help="exact, or a prefix ending in *"),
    grant: str | None = typer.Option(None, help="grant id"),
    result: str | None = typer.Option(None),
    since: str | None = typer.Option(None, help="ISO 8601 moment (inclusive)"),
    until: str | None = typer.Option(None, help="ISO 8601 moment (exclusive)"),
    after: int | None = typer.Option(None, "--after", help="cursor printed by the previous page"),
    limit: int = typer.Option(20, help="records per page"),
    fmt: str = typer.Option("table", "--format", help="table or json"),
) -> None:
    """Print a page of audit records matching the filters, then the next cursor."""
    if fmt not in ("table", "json"):
        raise BadInput(f"--format must be table or json, not {fmt!r}")
    data_dir = _folder(data)
    filters: dict[str, Any] = {
        "actor": actor,
        "org": org,
        "action": action,
        "resource": resource,
        "grant_id": grant,
        "result": result,
        "since": _moment("--since", since),
        "until": _moment("--until", until),
        "after_seq": after,
    }
    page = service.query(data_dir=data_dir, limit=limit, **filters)
    service.append(
        data_dir=data_dir,
        principal=None,
        action="audit.read",
        resource="audit/log",
        result="ok",
        rows=len(page.records),
        detail={
            "via": "cli",
            "filters": {
                k: (v.isoformat() if isinstance(v, datetime) else v)
                for k, v in filters.items()
                if v is not None
            },
        },
    )
    if fmt == "json":
        typer.echo(json.dumps(page.model_dump(), ensure_ascii=False))
        return
    out = Table("seq", "at", "actor", "action", "resource", "grant", "rows", "result")
    for r in page.records:
        out.add_row(
            str(r.seq),
            r.at,
            r.actor,
            r.action,
            r.resource,
            r.grant or "",
            "" if r.rows is None else str(r.rows),
            r.result,
        )
    Console().print(out)
    if page.next_after_seq is not None:
        typer.echo(f"# next: --after {page.next_after_seq}")


@audit.command("checkpoint")
def checkpoint(data: Path = DATA) -> None:
    """Sign a checkpoint of the last record now."""
    cp = service.checkpoint(data_dir=_folder(data))
    if cp is None:
        typer.echo("the audit log is empty: nothing to checkpoint")
        return
    typer.echo(f"checkpoint at seq {cp.seq} hash {cp.hash} signed by key {cp.key[:16]}")
