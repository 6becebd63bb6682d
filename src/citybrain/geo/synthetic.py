"""Synthetic streets, communities and grids below each real county, derived from its code.

Nothing here depends on a global seed or the clock: the same county code gives the same
units and polygons on every machine, so every node and every run agree on them.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from citybrain.geo.models import AdminUnit, Level

# Name parts with their pinyin, so English names need no romanisation library at run time.
_URBAN_STEMS = [
    ("文化", "Wenhua"),
    ("和平", "Heping"),
    ("建设", "Jianshe"),
    ("人民", "Renmin"),
    ("解放", "Jiefang"),
    ("新华", "Xinhua"),
    ("东关", "Dongguan"),
    ("西关", "Xiguan"),
    ("南关", "Nanguan"),
    ("北关", "Beiguan"),
    ("青年", "Qingnian"),
    ("胜利", "Shengli"),
    ("友谊", "Youyi"),
    ("花园", "Huayuan"),
    ("幸福", "Xingfu"),
    ("振兴", "Zhenxing"),
    ("泉城", "Quancheng"),
    ("明湖", "Minghu"),
    ("翠柳", "Cuiliu"),
    ("金山", "Jinshan"),
    ("银河", "Yinhe"),
    ("凤凰", "Fenghuang"),
    ("龙泉", "Longquan"),
    ("东城", "Dongcheng"),
    ("西城", "Xicheng"),
    ("南苑", "Nanyuan"),
    ("北苑", "Beiyuan"),
    ("长青", "Changqing"),
    ("春晖", "Chunhui"),
    ("兴隆", "Xinglong"),
    ("锦绣", "Jinxiu"),
    ("安康", "Ankang"),
    ("康宁", "Kangning"),
    ("丰收", "Fengshou"),
    ("朝阳", "Chaoyang"),
    ("望海", "Wanghai"),
    ("泰和", "Taihe"),
    ("永安", "Yong'an"),
    ("瑞祥", "Ruixiang"),
    ("华苑", "Huayuan"),
]
_SURNAMES = [
    ("王", "Wang"),
    ("李", "Li"),
    ("张", "Zhang"),
    ("刘", "Liu"),
    ("陈", "Chen"),
    ("杨", "Yang"),
    ("赵", "Zhao"),
    ("黄", "Huang"),
    ("周", "Zhou"),
    ("吴", "Wu"),
    ("孙", "Sun"),
    ("马", "Ma"),
    ("朱", "Zhu"),
    ("胡", "Hu"),
    ("高", "Gao"),
    ("林", "Lin"),
    ("郭", "Guo"),
    ("何", "He"),
    ("徐", "Xu"),
    ("宋", "Song"),
    ("韩", "Han"),
    ("冯", "Feng"),
    ("邢", "Xing"),
    ("孔", "Kong"),
    ("颜", "Yan"),
    ("曹", "Cao"),
    ("田", "Tian"),
    ("董", "Dong"),
]
_PLACE_SUFFIXES = [
    ("家庄", "jiazhuang"),
    ("官庄", "guanzhuang"),
    ("集", "ji"),
    ("店", "dian"),
    ("屯", "tun"),
    ("庄", "zhuang"),
    ("寨", "zhai"),
    ("营", "ying"),
    ("洼", "wa"),
    ("坡", "po"),
    ("家楼", "jialou"),
    ("家沟", "jiagou"),
    ("家河", "jiahe"),
    ("桥", "qiao"),
    ("岭", "ling"),
]
_KIND = {
    (Level.street, True): ("街道", "Subdistrict"),
    (Level.street, False): ("镇", "Town"),
    (Level.community, True): ("社区", "Community"),
    (Level.community, False): ("村", "Village"),
}

_cache: dict[tuple[str, bool], dict[str, tuple[AdminUnit, BaseGeometry]]] = {}
_lock = threading.Lock()
_KM_PER_DEG_LAT = 111.32


def _rng(code: str) -> np.random.Generator:
    """Seed a generator from the code alone."""
    return np.random.default_rng(int(code))


def street_count(county: AdminUnit) -> int:
    """Streets of a county: denser in urban districts (区), by area elsewhere."""
    if county.name_zh.endswith("区"):
        return int(min(30, max(6, round(county.area_km2 / 60) + 5)))
    return int(min(25, max(6, round(county.area_km2 / 90))))


def _split(geom: BaseGeometry, n: int, rng: np.random.Generator) -> list[BaseGeometry]:
    """Split a polygon into n pieces with Voronoi cells of points drawn inside it."""
    if n <= 1:
        return [geom]
    minx, miny, maxx, maxy = geom.bounds
    shapely.prepare(geom)
    xs_all: list[np.ndarray[Any, Any]] = []
    ys_all: list[np.ndarray[Any, Any]] = []
    found = 0
    for _ in range(200):
        xs = rng.uniform(minx, maxx, 4 * n)
        ys = rng.uniform(miny, maxy, 4 * n)
        inside = shapely.contains_xy(geom, xs, ys)
        xs_all.append(xs[inside])
        ys_all.append(ys[inside])
        found += int(inside.sum())
        if found >= n:
            break
    points = np.column_stack([np.concatenate(xs_all), np.concatenate(ys_all)])[:n]
    if len(points) < 2:
        return [geom]
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(points), extend_to=shapely.box(*geom.bounds))
    )
    pieces = shapely.intersection(cells, geom)
    pieces = pieces[shapely.area(pieces) > 0]
    # order pieces west to east, then south to north, so codes do not depend on GEOS internals
    centres = shapely.get_coordinates(shapely.centroid(pieces))
    order = np.lexsort((np.round(centres[:, 1], 9), np.round(centres[:, 0], 9)))
    return [_polygonal(pieces[i]) for i in order]


def _strips(geom: BaseGeometry, n: int) -> list[BaseGeometry]:
    """Split a polygon into n west-to-east strips (cheap, for the many small grids)."""
    minx, miny, maxx, maxy = geom.bounds
    edges = np.linspace(minx, maxx, n + 1)
    boxes = shapely.box(edges[:-1], miny, edges[1:], maxy)
    pieces = shapely.intersection(boxes, geom)
    return [_polygonal(p) for p in pieces[shapely.area(pieces) > 0]]


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Drop the points and lines an intersection may leave beside the polygons."""
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if len(parts) > 1 else parts[0]


def _names(
    level: Level, urban: bool, count: int, rng: np.random.Generator
) -> list[tuple[str, str]]:
    """Draw count distinct plausible names for units of a level."""
    zh_kind, en_kind = _KIND[(level, urban)]
    if urban:
        pool = [(zh, en) for zh, en in _URBAN_STEMS]
    else:
        pool = [(s + p, s_en + p_en) for s, s_en in _SURNAMES for p, p_en in _PLACE_SUFFIXES]
    picks = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
    names = [pool[int(i)] for i in picks]
    # more units than distinct stems: number the repeats (一 is rare, so use Arabic digits)
    while len(names) < count:
        zh, en = pool[int(rng.integers(len(pool)))]
        names.append((f"{zh}{len(names) + 1}", f"{en} {len(names) + 1}"))
    return [(f"{zh}{zh_kind}", f"{en.capitalize()} {en_kind}") for zh, en in names]


def _units(
    codes: list[str],
    names: list[tuple[str, str]],
    level: Level,
    parent: str,
    geoms: list[BaseGeometry],
) -> list[AdminUnit]:
    """Build the units of one parent at once (vectorised centroids and areas)."""
    arr = np.array(geoms, dtype=object)
    centres = shapely.centroid(arr)
    xy = shapely.get_coordinates(centres)
    inside = shapely.contains_xy(arr, xy[:, 0], xy[:, 1])
    areas = shapely.area(arr) * _KM_PER_DEG_LAT**2 * np.cos(np.radians(xy[:, 1]))
    units = []
    for i, code in enumerate(codes):
        x, y = float(xy[i, 0]), float(xy[i, 1])
        if not inside[i]:
            surface = geoms[i].point_on_surface()
            x, y = surface.x, surface.y
        units.append(
            AdminUnit(
                code=code,
                name_zh=names[i][0],
                name_en=names[i][1],
                level=level,
                parent=parent,
                centroid_lon=round(x, 6),
                centroid_lat=round(y, 6),
                area_km2=round(float(areas[i]), 3),
            )
        )
    return units


def units_of_county(
    county: AdminUnit, boundary: BaseGeometry, *, grids: bool = True
) -> dict[str, tuple[AdminUnit, BaseGeometry]]:
    """Return the synthetic units below a county by code, with polygons (cached).

    Grids are many and small; callers that need only streets and communities pass
    grids=False and skip building them.
    """
    key = (county.code, grids)
    with _lock:
        cached = _cache.get(key)
    if cached is not None:
        return cached
    if grids:
        result = dict(units_of_county(county, boundary, grids=False))
        for unit, geom in list(result.values()):
            if unit.level == Level.community:
                result.update(_grids_of(unit, geom))
    else:
        result = _streets_and_communities(county, boundary)
    with _lock:
        _cache[key] = result
    return result


def _streets_and_communities(
    county: AdminUnit, boundary: BaseGeometry
) -> dict[str, tuple[AdminUnit, BaseGeometry]]:
    rng = _rng(county.code)
    district = county.name_zh.endswith("区")
    result: dict[str, tuple[AdminUnit, BaseGeometry]] = {}
    streets = _split(boundary, street_count(county), rng)
    # districts are urban throughout; elsewhere the first two streets are the county seat's
    urban_flags = [district or i < 2 for i in range(len(streets))]
    urban_names = iter(_names(Level.street, True, len(streets), rng))
    rural_names = iter(_names(Level.street, False, len(streets), rng))
    s_codes = [f"{county.code}{i:03d}" for i in range(1, len(streets) + 1)]
    s_names = [next(urban_names) if u else next(rural_names) for u in urban_flags]
    s_units = _units(s_codes, s_names, Level.street, county.code, streets)
    for s_unit, s_geom, urban in zip(s_units, streets, urban_flags, strict=True):
        result[s_unit.code] = (s_unit, s_geom)
        s_rng = _rng(s_unit.code)
        n_comm = int(s_rng.integers(8, 21) if urban else s_rng.integers(10, 26))
        communities = _split(s_geom, n_comm, s_rng)
        c_names = _names(Level.community, urban, len(communities), s_rng)
        c_codes = [f"{s_unit.code}{i:03d}" for i in range(1, len(communities) + 1)]
        c_units = _units(c_codes, c_names, Level.community, s_unit.code, communities)
        for c_unit, c_geom in zip(c_units, communities, strict=True):
            result[c_unit.code] = (c_unit, c_geom)
    return result


def _grids_of(
    community: AdminUnit, boundary: BaseGeometry
) -> dict[str, tuple[AdminUnit, BaseGeometry]]:
    count = int(_rng(community.code).integers(2, 7))
    pieces = _strips(boundary, count)
    codes = [f"{community.code}{i:03d}" for i in range(1, len(pieces) + 1)]
    names = [
        (f"{community.name_zh}第{i}网格", f"{community.name_en} Grid {i}")
        for i in range(1, len(pieces) + 1)
    ]
    units = _units(codes, names, Level.grid, community.code, pieces)
    return {u.code: (u, g) for u, g in zip(units, pieces, strict=True)}
