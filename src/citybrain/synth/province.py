"""Province-wide tables held by the province node: the drug and service catalogues."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

Tables = dict[tuple[str, str], pa.Table]

_DRUG_STEMS = [
    ("阿莫西林胶囊", "粒", 0.35),
    ("头孢克肟片", "片", 1.8),
    ("布洛芬缓释胶囊", "粒", 0.6),
    ("二甲双胍片", "片", 0.12),
    ("硝苯地平控释片", "片", 1.5),
    ("阿托伐他汀钙片", "片", 2.2),
    ("氨氯地平片", "片", 0.9),
    ("奥美拉唑肠溶胶囊", "粒", 0.8),
    ("复方甘草片", "片", 0.05),
    ("胰岛素注射液", "支", 48.0),
    ("左氧氟沙星片", "片", 1.1),
    ("氯吡格雷片", "片", 3.0),
    ("蒙脱石散", "袋", 1.2),
    ("连花清瘟胶囊", "粒", 0.5),
    ("丹参滴丸", "丸", 0.08),
    ("甲钴胺片", "片", 0.7),
    ("雷贝拉唑钠肠溶片", "片", 2.6),
    ("培哚普利片", "片", 2.9),
    ("枸橼酸西地那非片", "片", 25.0),
    ("黄体酮胶囊", "粒", 3.2),
    ("前列康片", "片", 0.6),
    ("坦索罗辛缓释胶囊", "粒", 2.1),
    ("孟鲁司特钠咀嚼片", "片", 3.5),
    ("小儿氨酚黄那敏颗粒", "袋", 0.9),
]
_SERVICES = [
    ("一般诊疗费", "次", 10.0, None, None),
    ("普通门诊诊查费", "次", 6.0, None, None),
    ("床位费(三人间)", "日", 35.0, None, None),
    ("护理费(二级)", "日", 20.0, None, None),
    ("血常规", "次", 18.0, None, None),
    ("肝功能检查", "次", 60.0, None, None),
    ("胸部CT平扫", "次", 160.0, None, None),
    ("彩色多普勒超声", "次", 120.0, None, None),
    ("前列腺特异抗原测定", "次", 45.0, "男", None),
    ("妇科检查", "次", 15.0, "女", None),
    ("产前检查", "次", 30.0, "女", None),
    ("新生儿护理", "日", 25.0, None, 1),
    ("静脉输液", "次", 8.0, None, None),
    ("针灸", "次", 20.0, None, None),
    ("血液透析", "次", 400.0, None, None),
    ("阑尾切除术", "次", 1200.0, None, None),
]


def catalogues(seed: int) -> Tables:
    """Build the drug and service catalogues with standard prices and restrictions."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 370000, 1]))
    drug_rows: dict[str, list[object]] = {
        k: []
        for k in (
            "code",
            "name",
            "spec",
            "unit",
            "standard_price",
            "category",
            "gender",
            "max_age",
            "max_quantity_per_visit",
        )
    }
    for i, (name, unit, price) in enumerate(_DRUG_STEMS):
        for j, (spec, factor) in enumerate((("小包装", 1.0), ("大包装", 2.5))):
            drug_rows["code"].append(f"XD{i:04d}{j}")
            drug_rows["name"].append(f"{name}({spec})")
            drug_rows["spec"].append(spec)
            drug_rows["unit"].append(unit)
            drug_rows["standard_price"].append(
                round(price * factor * float(rng.uniform(0.9, 1.1)), 2)
            )
            drug_rows["category"].append(str(rng.choice(["甲", "乙", "丙"], p=[0.45, 0.45, 0.10])))
            gender = (
                "男"
                if ("西地那非" in name or "前列" in name or "坦索罗辛" in name)
                else ("女" if "黄体酮" in name else None)
            )
            drug_rows["gender"].append(gender)
            drug_rows["max_age"].append(12 if name.startswith("小儿") else None)
            drug_rows["max_quantity_per_visit"].append(int(rng.choice([28, 42, 60, 90])))
    service_rows: dict[str, list[object]] = {
        k: []
        for k in (
            "code",
            "name",
            "unit",
            "standard_price",
            "category",
            "gender",
            "max_age",
        )
    }
    for i, (name, unit, price, gender, max_age) in enumerate(_SERVICES):
        service_rows["code"].append(f"FW{i:05d}")
        service_rows["name"].append(name)
        service_rows["unit"].append(unit)
        service_rows["standard_price"].append(price)
        service_rows["category"].append("甲" if price < 100 else "乙")
        service_rows["gender"].append(gender)
        service_rows["max_age"].append(max_age)
    drugs = pa.table(
        {
            k: pa.array(
                v,
                pa.float64()
                if k == "standard_price"
                else pa.int32()
                if k in ("max_age", "max_quantity_per_visit")
                else pa.string(),
            )
            for k, v in drug_rows.items()
        }
    )
    services = pa.table(
        {
            k: pa.array(
                v,
                pa.float64()
                if k == "standard_price"
                else pa.int32()
                if k == "max_age"
                else pa.string(),
            )
            for k, v in service_rows.items()
        }
    )
    return {
        ("medical_security", "drug_catalogue"): drugs,
        ("medical_security", "service_catalogue"): services,
    }
