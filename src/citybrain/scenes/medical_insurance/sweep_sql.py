"""The same rules as hand-written DuckDB SQL: the reference the Ibis sweep is measured against.

Each kind's statement reads the views `s` (settlements with epoch seconds) and `i` (items
with their settlement's fields) that `prepare` creates, with the rule's parameters written
in; tests hold its findings equal to the Ibis sweep's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa

from citybrain.core.errors import BadInput
from citybrain.scenes.medical_insurance.rules import Rule, RuleBase
from citybrain.scenes.medical_insurance.sweep import (
    NO_LIMIT,
    _catalogue_tables,
    data_paths,
    finish,
    travel_table,
)

Statement = Callable[[Rule, int], str]


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(_q(v) for v in values) + ")" if values else "(NULL)"


def _select(rule: Rule, code: str = "''") -> str:
    return (
        f"select distinct {_q(rule.id)} as rule_id, sid as settlement_id, person as person_id, "
        f"inst as institution_id, {code} as item_code"
    )


def _duplicate(rule: Rule, h: int) -> str:
    # only lines whose (person, institution, code, day) occurs twice can be duplicates
    return f"""{_select(rule, "code")} from (
      select sid, person, inst, code, t,
             lag(sid) over w as prev_sid, lag(t) over w as prev_t
      from i semi join (select person, inst, code, day from i group by all having count(*) > 1) d
        using (person, inst, code, day)
      window w as (partition by person, inst, code, day order by t, sid, line))
    where prev_sid is not null and (prev_sid = sid or t - prev_t <= {h})"""


def _over_price(rule: Rule, h: int) -> str:
    factor = 1.0 + float(rule.params["tolerance"])
    return f"""{_select(rule, "code")} from i join cat on cat.c_code = i.code
    where price > c_price * {factor!r} + 1e-9"""


def _unbundled(rule: Rule, h: int) -> str:
    return f"""{_select(rule, "b.component_code")} from (
      select a.sid, a.person, a.inst, b.component_code from i a
      join bundles b on b.package_code = a.code
      join i c on c.sid = a.sid and c.code = b.component_code) b"""


def _restricted(rule: Rule, h: int) -> str:
    return f"""{_select(rule, "code")} from i join cat on cat.c_code = i.code
    where (c_gender <> '' and c_gender <> sex) or age > c_max_age"""


def _over_quantity(rule: Rule, h: int) -> str:
    kinds = _in(tuple(rule.params["settlement_kinds"]))
    return f"""{_select(rule, "code")} from (
      select sid, person, inst, code, sum(qty) as qty from i
      where kind in {kinds} and ikind = 'drug' group by all) q
    join cat on cat.c_code = q.code where qty > c_max_q and c_max_q < {NO_LIMIT}"""


def _repeated(rule: Rule, h: int) -> str:
    kinds = _in(tuple(rule.params["settlement_kinds"]))
    window = min(int(rule.params["window_days"]) * 86400, h)
    return f"""{_select(rule, "code")} from (
      select sid, person, inst, code, t, lag(t) over (partition by person, code order by t, sid)
             as prev_t
      from (select distinct sid, person, inst, code, t from i
            where kind in {kinds} and ikind = 'drug') d)
    where prev_t is not null and t - prev_t <= {window}"""


_BEFORE = "(h.t < a.t or (h.t = a.t and h.sid < a.sid)) and a.t - h.t <= {h}"


def _split(rule: Rule, h: int) -> str:
    same = "and a.inst = h.inst" if rule.params["same_institution"] else ""
    gap = int(rule.params["max_gap_days"]) * 86400
    return f"""{_select(rule)} from (
      select a.sid, a.person, a.inst from s a join s h on a.person = h.person
      and {_BEFORE.format(h=h)}
      where a.kind = 'inpatient' and h.kind = 'inpatient' and a.dx = h.dx {same}
      and a.ts - h.te between 0 and {gap})"""


def _bed_hanging(rule: Rule, h: int) -> str:
    beds = _in(tuple(rule.params["bed_codes"]))
    return f"""{_select(rule)} from (
      select sid, person, inst, count(*) filter (where bed and not care) as empty from (
        select sid, person, inst, day, bool_or(code in {beds}) as bed,
               bool_or(code not in {beds}) as care
        from i where kind = 'inpatient' group by all) group by all)
    where empty >= {int(rule.params["min_empty_days"])}"""


def _time_conflict(rule: Rule, h: int) -> str:
    return f"""{_select(rule)} from (
      select a.sid, a.person, a.inst from s a join s h on a.person = h.person
      and {_BEFORE.format(h=h)}
      where a.inst <> h.inst and a.city = h.city and a.ts < h.te and h.ts < a.te)"""


def _lending(rule: Rule, h: int) -> str:
    return f"""{_select(rule)} from (
      select a.sid, a.person, a.inst from s a join s h on a.person = h.person
      and {_BEFORE.format(h=h)}
      join travel_{rule.id} tr on tr.city_a = a.city and tr.city_b = h.city
      where a.city <> h.city and greatest(a.ts - h.te, h.ts - a.te) < tr.travel_s)"""


def _cash_out(rule: Rule, h: int) -> str:
    window = min(int(rule.params["window_days"]) * 86400, h)
    return f"""{_select(rule)} from (
      select a.sid, a.person, a.inst, count(distinct h.inst) as places, sum(h.total) as amount
      from s a join s h on a.person = h.person
      and (h.t < a.t or (h.t = a.t and h.sid <= a.sid)) and a.t - h.t <= {window}
      where a.kind = 'pharmacy' and h.kind = 'pharmacy' group by all)
    where places >= {int(rule.params["min_pharmacies"])}
      and amount >= {float(rule.params["min_amount"])!r}"""


SQL: dict[str, Statement] = {
    "duplicate_charge": _duplicate,
    "over_price": _over_price,
    "unbundled_charge": _unbundled,
    "restricted_item": _restricted,
    "over_quantity": _over_quantity,
    "repeated_dispensing": _repeated,
    "split_admission": _split,
    "bed_hanging": _bed_hanging,
    "time_conflict": _time_conflict,
    "voucher_lending": _lending,
    "cash_out": _cash_out,
}


def prepare(con: duckdb.DuckDBPyConnection, data: Path, rulebase: RuleBase) -> None:
    """Create the views s and i and the small tables the statements read."""
    s_path, i_path = data_paths(data)
    con.execute(
        f"""create or replace temp table s as select settlement_id as sid, person_id as person,
        institution_id as inst, city_code as city, kind, diagnosis as dx, sex,
        cast(age as bigint) as age, epoch(settled_at)::bigint as t, epoch(start)::bigint as ts,
        epoch("end")::bigint as te, total from read_parquet('{s_path}')"""
    )
    con.execute(
        f"""create or replace temp table i as select s.sid, s.person, s.inst, s.kind, s.sex,
        s.age, s.t, it.line, it.code, it.kind as ikind,
        it.quantity as qty, it.unit_price as price, it.service_date as day
        from s join read_parquet('{i_path}') it on it.settlement_id = s.sid"""
    )
    cat, bundles = _catalogue_tables(rulebase.catalogue)
    con.register("cat", cat)
    con.register("bundles", bundles)
    for rule in rulebase.rules:
        if rule.kind == "voucher_lending":
            travel = travel_table(rulebase.catalogue, float(rule.params["speed_kmh"]))
            con.register(f"travel_{rule.id}", travel)


def statement(rulebase: RuleBase) -> str:
    """One SQL statement with every rule's findings."""
    h = rulebase.history_days * 86400
    parts = [SQL[r.kind](r, h) for r in rulebase.rules]
    if not parts:
        raise BadInput("the rule base has no rules")
    return "\nunion all\n".join(f"({p})" for p in parts)


def sweep_sql(data: Path, rulebase: RuleBase) -> pa.Table:
    """Run every rule as raw DuckDB SQL; the same findings as the Ibis sweep."""
    con = duckdb.connect()
    con.execute("set enable_progress_bar = false")
    con.execute("set preserve_insertion_order = false")  # the findings are sorted at the end
    prepare(con, data, rulebase)
    return finish(con.sql(statement(rulebase)).to_arrow_table(), rulebase)
