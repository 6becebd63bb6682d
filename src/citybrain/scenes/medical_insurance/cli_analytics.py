"""`citybrain medins rules|sweep|leads`: the rule base, the sweep after payment and the leads."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from citybrain.core.errors import BadInput
from citybrain.scenes.medical_insurance import governed
from citybrain.scenes.medical_insurance import rules as rules_mod

rules_app = typer.Typer(no_args_is_help=True, help="The rule base of the checks.")


def _catalogue(data: Path | None) -> rules_mod.Catalogue:
    from citybrain.scenes.medical_insurance.sweep import catalogue_folder

    if data is None:
        return rules_mod.Catalogue(entries={}, city_xy=rules_mod.shandong_cities())
    return rules_mod.load_catalogue(catalogue_folder(data))


def _rulebase(path: Path | None, data: Path | None) -> rules_mod.RuleBase:
    return rules_mod.load_rulebase(path, _catalogue(data))


@rules_app.command("check")
def rules_check(
    file: Path = typer.Argument(..., help="a rule base YAML file"),
) -> None:
    """Check a rule base file: it parses and every rule names known kinds and fields."""
    rb = rules_mod.load_rulebase(file)
    Console().print(f"{file}: {rb.name} version {rb.version}, {len(rb.rules)} rules, fine")


@rules_app.command("list")
def rules_list(
    file: Path | None = typer.Option(None, "--rules", help="rule base (default: shipped)"),
) -> None:
    """List the rules of a rule base with grade and parameters."""
    rb = rules_mod.load_rulebase(file)
    table = Table(title=f"{rb.name} v{rb.version}")
    for col in ("id", "v", "grade", "kind", "params"):
        table.add_column(col)
    for r in rb.rules:
        params = ", ".join(f"{k}={v}" for k, v in sorted(r.params.items()))
        table.add_row(r.id, str(r.version), str(r.grade), r.kind, params)
    Console().print(table)


def sweep_cmd(
    data: Path = typer.Option(..., "--data", help="a node's data folder (e.g. OUT/370100)"),
    backend: str = typer.Option("duckdb", help="duckdb or spark"),
    rules: Path | None = typer.Option(None, "--rules", help="rule base (default: shipped)"),
    out: Path | None = typer.Option(None, help="write the findings to this Parquet file"),
    engine: str = typer.Option("ibis", help="ibis (portable) or sql (raw DuckDB reference)"),
    org: str = typer.Option(governed.OWNER, help="who reads (the gate decides)"),
    role: str = typer.Option("steward", help="role of who reads"),
) -> None:
    """Run every rule over all settlements of a node (after payment) and count the findings."""
    import pyarrow.parquet as pq

    from citybrain.scenes.medical_insurance import sweep, sweep_sql

    if backend not in sweep.BACKENDS:
        raise BadInput(f"--backend must be one of {', '.join(sweep.BACKENDS)}")
    if engine not in ("ibis", "sql") or (engine == "sql" and backend != "duckdb"):
        raise BadInput("--engine must be ibis, or sql with the duckdb backend")
    sweep.data_paths(data)  # a clear error for a folder without settlements, before the gate
    governed.authorize_sweep(
        data=data, principal=governed.analyst(org, role), action="medins.sweep"
    )
    rb = _rulebase(rules, data)
    if engine == "sql":
        findings = sweep_sql.sweep_sql(data, rb)
    else:
        findings = sweep.sweep(data, rb, backend=backend)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(findings, out)
    counts = Counter(findings["rule_id"].to_pylist())
    table = Table(title=f"{findings.num_rows:,} findings ({rb.name} v{rb.version}, {backend})")
    table.add_column("rule")
    table.add_column("grade")
    table.add_column("findings", justify="right")
    for r in rb.rules:
        table.add_row(r.id, str(r.grade), f"{counts.get(r.id, 0):,}")
    Console().print(table)


def leads_cmd(
    data: Path = typer.Option(..., "--data", help="a node's data folder (e.g. OUT/370100)"),
    level: str = typer.Option("provider", help="provider or person"),
    top: int = typer.Option(10, help="how many leads", min=1, max=10_000),
    format: str = typer.Option("table", "--format", help="table or json"),
    org: str = typer.Option(governed.OWNER, help="who reads (the gate decides)"),
    role: str = typer.Option("steward", help="role of who reads"),
) -> None:
    """Rank providers or persons by anomaly score, with the features that stand out."""
    from citybrain.scenes.medical_insurance import anomaly, sweep

    if level not in ("provider", "person"):
        raise BadInput("--level must be provider or person")
    if format not in ("table", "json"):
        raise BadInput("--format must be table or json")
    sweep.data_paths(data)
    governed.authorize_sweep(
        data=data, principal=governed.analyst(org, role), action="medins.leads"
    )
    cat = _catalogue(data)
    leads = (
        anomaly.provider_leads(data, cat)
        if level == "provider"
        else anomaly.person_leads(data, cat)
    )
    leads = leads[:top]
    if format == "json":
        typer.echo(
            json.dumps(
                [
                    {
                        "subject": lead.subject,
                        "peer_group": lead.peer_group,
                        "score": lead.score,
                        "standouts": [
                            {"feature": f, "value": v, "z": z} for f, v, z in lead.standouts
                        ],
                    }
                    for lead in leads
                ],
                ensure_ascii=False,
            )
        )
        return
    table = Table(title=f"{level} leads")
    for col in ("rank", level, "peers", "score", "stands out"):
        table.add_column(col)
    for rank, lead in enumerate(leads, start=1):
        why = "; ".join(f"{f}={v} (z {z:+})" for f, v, z in lead.standouts)
        table.add_row(str(rank), lead.subject, lead.peer_group, f"{lead.score:.3f}", why)
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Attach this module's commands to the scene's command group."""
    app.add_typer(rules_app, name="rules", help="The rule base of the checks.")
    app.command("sweep")(sweep_cmd)
    app.command("leads")(leads_cmd)
