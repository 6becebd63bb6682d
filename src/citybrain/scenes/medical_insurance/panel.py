"""The scene's panel: fund flow, findings by rule and institution, cases, vouchers used.

`figures` gives this node's own numbers (aggregates only: no person, no record). A parent
rolls its children's figures up the way indicators roll up (federation/rollup.py): it asks
every trusted child's `GET /api/medins/panel/export` in parallel with its peer token within a
deadline, adds them to its own, and names the children that did not answer; the figures a
child sent last time are kept and shown as stale.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select

from citybrain.core.config import Settings
from citybrain.federation import trust
from citybrain.federation.children import ask_children
from citybrain.federation.models import Relation
from citybrain.scenes.medical_insurance import cases, voucher
from citybrain.scenes.medical_insurance.service import Scene, now_utc
from citybrain.scenes.medical_insurance.tables import findings, settlements, voucher_uses, vouchers

DEADLINE = 5.0
TOP = 10


def figures(scene: Scene, *, days: int = 30, now: datetime | None = None) -> dict[str, Any]:
    """Return this node's panel figures over the last `days` days."""
    moment = now_utc(now)
    since = moment - timedelta(days=days)
    s = settlements.c
    with scene.engine.connect() as conn:
        by_outcome = {
            outcome: {
                "settlements": int(n),
                "total": round(float(t or 0), 2),
                "fund": round(float(f or 0), 2),
            }
            for outcome, n, t, f in conn.execute(
                select(s.outcome, func.count(), func.sum(s.total_amount), func.sum(s.fund_amount))
                .where(s.created_at >= since)
                .group_by(s.outcome)
            )
        }
        by_kind = {
            kind: {"settlements": int(n), "fund": round(float(f or 0), 2)}
            for kind, n, f in conn.execute(
                select(s.kind, func.count(), func.sum(s.fund_amount))
                .where(s.created_at >= since, s.paid.is_(True))
                .group_by(s.kind)
            )
        }
        by_day = [
            {"day": day, "settlements": int(n), "fund": round(float(f or 0), 2)}
            for day, n, f in conn.execute(
                select(s.settled_on, func.count(), func.sum(s.fund_amount))
                .where(s.created_at >= since)
                .group_by(s.settled_on)
                .order_by(s.settled_on)
            )
        ]
        f = findings.c
        by_rule = {
            rule: {"findings": int(n), "amount": round(float(a or 0), 2)}
            for rule, n, a in conn.execute(
                select(f.rule_id, func.count(), func.sum(f.amount)).group_by(f.rule_id)
            )
        }
        by_institution = [
            {"institution_id": inst, "findings": int(n), "amount": round(float(a or 0), 2)}
            for inst, n, a in conn.execute(
                select(f.institution_id, func.count(), func.sum(f.amount))
                .group_by(f.institution_id)
                .order_by(func.count().desc(), f.institution_id)
                .limit(TOP)
            )
        ]
        by_source = {
            src: int(n)
            for src, n in conn.execute(select(f.source, func.count()).group_by(f.source))
        }
        active = conn.execute(
            select(func.count()).where(vouchers.c.status == "active")
        ).scalar_one()
        uses = {
            kind: int(n)
            for kind, n in conn.execute(
                select(voucher_uses.c.kind, func.count())
                .where(voucher_uses.c.used_at >= since)
                .group_by(voucher_uses.c.kind)
            )
        }
    paid = [v for k, v in by_outcome.items() if k != "block"]
    blocked = by_outcome.get("block", {"settlements": 0, "total": 0.0})
    counters = voucher.counts(scene, days=days)
    return {
        "node": scene.code,
        "days": days,
        "at": moment.isoformat(),
        "fund": {
            "settlements": sum(v["settlements"] for v in by_outcome.values()),
            "paid_settlements": sum(v["settlements"] for v in paid),
            "total": round(sum(v["total"] for v in by_outcome.values()), 2),
            "fund_paid": round(sum(v["fund"] for v in paid), 2),
            "blocked_settlements": blocked["settlements"],
            "blocked_amount": blocked["total"],
            "by_outcome": by_outcome,
            "by_kind": by_kind,
            "by_day": by_day,
        },
        "findings": {
            "total": sum(v["findings"] for v in by_rule.values()),
            "by_source": by_source,
            "by_rule": dict(sorted(by_rule.items())),
            "top_institutions": by_institution,
        },
        "cases": cases.stage_counts(scene, now=moment),
        "vouchers": {
            "active": int(active),
            "uses": dict(sorted(uses.items())),
            "refused": {
                k.removeprefix("refused_"): v
                for k, v in counters.items()
                if k.startswith("refused_")
            },
        },
    }


def _add(into: dict[str, Any], more: dict[str, Any]) -> None:
    """Add the numbers of one figures tree into another (same shape; lists are kept apart)."""
    for key, value in more.items():
        if isinstance(value, bool) or key in ("node", "days", "at"):
            continue
        if isinstance(value, int | float):
            into[key] = round(into.get(key, 0) + value, 2)
        elif isinstance(value, dict):
            _add(into.setdefault(key, {}), value)


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum several nodes' figures: counts and amounts add up; top lists and days merge."""
    total: dict[str, Any] = {}
    days: dict[str, dict[str, float]] = {}
    top: dict[str, dict[str, float]] = {}
    for part in parts:
        _add(total, part)
        for row in part.get("fund", {}).get("by_day", []):
            entry = days.setdefault(row["day"], {"settlements": 0, "fund": 0.0})
            entry["settlements"] += row["settlements"]
            entry["fund"] = round(entry["fund"] + row["fund"], 2)
        for row in part.get("findings", {}).get("top_institutions", []):
            entry = top.setdefault(row["institution_id"], {"findings": 0, "amount": 0.0})
            entry["findings"] += row["findings"]
            entry["amount"] = round(entry["amount"] + row["amount"], 2)
    total.setdefault("fund", {})["by_day"] = [{"day": d, **v} for d, v in sorted(days.items())]
    ranked = sorted(top.items(), key=lambda kv: (-kv[1]["findings"], kv[0]))[:TOP]
    total.setdefault("findings", {})["top_institutions"] = [
        {"institution_id": k, **v} for k, v in ranked
    ]
    return total


def _panel_of(peer: dict[str, Any], body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or body.get("node") != str(peer["code"]):
        raise RuntimeError("the answer is not that node's panel")
    return body


async def gather(
    scene: Scene,
    settings: Settings,
    *,
    days: int,
    deadline: float = DEADLINE,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Ask every trusted child for its panel in parallel; return answers and who is missing."""
    children = trust.list_peers(engine=scene.engine, relation=Relation.child)
    return await ask_children(
        peers=children,
        settings=settings,
        path="/api/medins/panel/export",
        params={"days": days},
        check=_panel_of,
        deadline=deadline,
        transport=transport,
    )


def rolled_up(
    scene: Scene,
    settings: Settings,
    *,
    days: int = 30,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """Return this node's figures plus its children's, naming the children that are missing."""
    start = time.perf_counter()
    own = figures(scene, days=days)
    answers, missing = asyncio.run(gather(scene, settings, days=days, transport=transport))
    last: dict[str, dict[str, Any]] = scene.extra.setdefault("panel_children", {})
    last.update(answers)
    stale = {code: last[code]["at"] for code in missing if code in last}
    parts = [own, *(last[c] for c in sorted(last))]
    total = combine(parts)
    total.update(
        node=scene.code,
        days=days,
        at=datetime.now(UTC).isoformat(),
        scope="tree",
        children={c: {"settlements": last[c]["fund"]["settlements"]} for c in sorted(last)},
        answered=sorted(answers),
        missing=dict(sorted(missing.items())),
        stale=stale,
        seconds=round(time.perf_counter() - start, 3),
    )
    return total


def dashboard_form(data: dict[str, Any]) -> dict[str, Any]:
    """Put panel figures in the one screen's panel form: cards, a table and bars."""
    fund = data.get("fund", {})
    found = data.get("findings", {})
    case_figures = data.get("cases", {})
    vouchers_used = data.get("vouchers", {})
    open_cases = sum((case_figures.get("open_by_stage") or {}).values())
    cards = [
        {"label_zh": "结算笔数", "label_en": "Settlements", "value": fund.get("settlements", 0)},
        {
            "label_zh": "基金支付",
            "label_en": "Fund paid",
            "value": fund.get("fund_paid", 0),
            "unit": "元",
        },
        {
            "label_zh": "拦截笔数",
            "label_en": "Blocked",
            "value": fund.get("blocked_settlements", 0),
        },
        {"label_zh": "疑点", "label_en": "Findings", "value": found.get("total", 0)},
        {"label_zh": "在办案件", "label_en": "Open cases", "value": open_cases},
        {"label_zh": "超期案件", "label_en": "Overdue", "value": case_figures.get("overdue", 0)},
        {
            "label_zh": "凭证使用",
            "label_en": "Vouchers used",
            "value": sum((vouchers_used.get("uses") or {}).values()),
        },
        {
            "label_zh": "凭证拒绝",
            "label_en": "Vouchers refused",
            "value": sum((vouchers_used.get("refused") or {}).values()),
        },
    ]
    rows = [
        {"rule": rule, "findings": v.get("findings", 0), "amount": v.get("amount", 0)}
        for rule, v in sorted((found.get("by_rule") or {}).items())
    ]
    bars = [
        {"name": r["institution_id"], "value": r["findings"]}
        for r in found.get("top_institutions") or []
    ]
    return {
        "cards": cards,
        "table": {
            "columns": [
                {"key": "rule", "label_zh": "规则", "label_en": "Rule"},
                {"key": "findings", "label_zh": "疑点", "label_en": "Findings"},
                {"key": "amount", "label_zh": "金额", "label_en": "Amount"},
            ],
            "rows": rows,
        },
        "bars": {
            "label_zh": "疑点最多的机构",
            "label_en": "Institutions by findings",
            "items": bars,
        },
        "missing": data.get("missing", {}),
    }
