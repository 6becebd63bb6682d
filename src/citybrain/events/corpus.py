"""A labelled synthetic 12345 hotline corpus, generated deterministically from a seed."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

# what callers say about each type: the object and what is wrong with it
PHRASES: dict[str, list[str]] = {
    "manhole_cover": [
        "井盖丢了",
        "井盖坏了",
        "下水道井盖被偷了",
        "窨井盖破损",
        "井盖翘起来了",
        "井盖塌陷",
        "雨水井盖没了，很危险",
        "井盖松动一踩就响",
    ],
    "street_lamp": [
        "路灯不亮",
        "路灯坏了",
        "晚上路灯一直不亮",
        "路灯闪个不停",
        "路灯杆倒了",
        "一排路灯都黑着",
        "路灯白天也亮着",
        "路灯灯罩掉了",
    ],
    "fire_hydrant": [
        "消防栓漏水",
        "消防栓被撞坏了",
        "消火栓被车挡住了",
        "消防栓锈死了",
        "消防栓的盖子丢了",
        "消防栓一直在喷水",
    ],
    "traffic_signal": [
        "红绿灯坏了",
        "信号灯不亮",
        "红绿灯一直黄灯闪",
        "交通信号灯时间太短",
        "红绿灯倒了",
        "路口信号灯失灵",
        "红灯一直不变",
    ],
    "road_damage": [
        "路面坑坑洼洼",
        "马路上有个大坑",
        "路面塌陷了",
        "道路破损严重",
        "人行道砖松动",
        "路面裂缝很大",
        "路上坑太多车过不去",
    ],
    "guardrail": [
        "护栏被撞坏了",
        "隔离栏倒了",
        "道路护栏断了",
        "护栏歪了挡路",
        "中间隔离护栏缺了一段",
        "桥上栏杆松了",
    ],
    "overflowing_bin": [
        "垃圾桶满了没人清",
        "垃圾箱满溢",
        "垃圾桶都冒出来了",
        "垃圾箱好几天没清运",
        "分类垃圾桶装满了",
        "垃圾桶溢出来臭死了",
    ],
    "public_toilet": [
        "公厕太脏",
        "公共厕所没水冲",
        "公厕锁着门进不去",
        "厕所灯坏了",
        "公厕堵了",
        "公厕里臭气熏天",
    ],
    "fallen_tree": [
        "大树倒了",
        "树被风刮倒了压着路",
        "树枝断了挂在电线上",
        "行道树歪倒",
        "树倒在车上了",
        "枯树随时要倒",
    ],
    "exposed_garbage": [
        "路边堆了一堆垃圾",
        "有人乱倒垃圾",
        "建筑垃圾随便堆",
        "小区门口垃圾成堆",
        "绿化带里全是垃圾",
        "垃圾乱扔没人管",
    ],
    "street_vending": [
        "有人占道摆摊",
        "流动摊贩堵路",
        "商户把东西摆到人行道上",
        "早市占道经营",
        "烧烤摊占了马路",
        "小贩在路口卖水果堵车",
    ],
    "illegal_advertising": [
        "墙上贴满小广告",
        "电线杆上乱贴广告",
        "有人喷涂办证广告",
        "楼道里全是小广告",
        "非法广告牌挡住窗户",
        "牛皮癣广告到处都是",
    ],
    "illegal_parking": [
        "有车乱停",
        "车停在消防通道上",
        "车堵在小区门口",
        "人行道上停满了车",
        "违章停车挡路",
        "车辆占用盲道停放",
        "有辆车停我车位上好几天",
    ],
    "construction_noise": [
        "工地半夜施工太吵",
        "夜间施工噪音扰民",
        "工地天天晚上打桩",
        "装修电钻声太吵",
        "凌晨还在施工",
        "搅拌车整夜轰鸣",
    ],
    "muck_spill": [
        "渣土车撒了一路土",
        "渣土车没盖篷布",
        "泥头车漏土",
        "运土车把路弄脏了",
        "工地车辆带泥上路",
        "拉土车掉了一地渣土",
    ],
    "cooking_fumes": [
        "饭店油烟太大",
        "楼下餐馆油烟熏人",
        "烧烤油烟呛得受不了",
        "餐厅排烟管对着窗户",
        "油烟机直排没净化",
        "饭馆油烟把墙熏黑了",
    ],
    "sewage_discharge": [
        "有人往河里排污水",
        "污水直接排到路上",
        "工厂偷排污水",
        "下水道污水外溢",
        "河水发黑发臭",
        "洗车店污水乱流",
    ],
    "water_outage": [
        "家里停水了",
        "没有自来水",
        "突然停水也没通知",
        "水压太低上不去楼",
        "自来水发黄",
        "停水两天了还没来",
    ],
    "heating": [
        "暖气不热",
        "家里暖气冰凉",
        "供暖温度不达标",
        "暖气片不热",
        "集中供暖不热",
        "屋里才十几度暖气不行",
    ],
    "waterlogging": [
        "路上积水很深",
        "下雨后路面积水",
        "地下通道积水",
        "积水淹到膝盖",
        "路口积水车过不去",
        "雨后小区门口一片汪洋",
    ],
    "gas_leak": [
        "闻到燃气味",
        "煤气泄漏了",
        "楼道里有天然气味道",
        "燃气管道漏气",
        "有很浓的煤气味",
        "天然气管子破了在漏气",
    ],
    "food_safety": [
        "买到过期食品",
        "饭店卫生太差",
        "吃了外卖拉肚子",
        "超市卖变质肉",
        "餐馆用地沟油",
        "食品里有异物",
    ],
    "medical_insurance_fund": [
        "有人拿别人的医保卡买药",
        "诊所虚开药费骗医保",
        "医院挂床住院骗保",
        "药店用医保卡刷生活用品",
        "医保卡被借去套现",
        "医院重复收费还走医保",
    ],
    "sensor_alarm": [
        "监测设备一直在报警",
        "传感器数值异常报警",
        "烟感报警器一直响",
        "水位监测仪报警了",
        "空气监测站数据报警",
        "设备告警灯一直闪",
    ],
    "indicator_alarm": [
        "统计指标出现异常预警",
        "办结率指标低于预警线",
        "满意度指标预警",
        "指标数据异常下滑",
        "考核指标亮红灯",
        "监测指标超过阈值预警",
    ],
}
PLACES = [
    "历下区泉城路",
    "市中区经四路",
    "槐荫区经十路",
    "天桥区北园大街",
    "历城区花园路",
    "长清区大学路",
    "章丘区明水",
    "高新区舜华路",
    "青岛市南区香港中路",
    "崂山区海尔路",
    "黄岛区长江路",
    "淄博张店区",
    "枣庄市中区",
    "东营区西四路",
    "烟台芝罘区",
    "潍坊奎文区",
    "济宁任城区",
    "泰山区东岳大街",
    "威海环翠区",
    "日照东港区",
    "临沂兰山区",
    "德州德城区",
    "聊城东昌府区",
    "滨州滨城区",
    "菏泽牡丹区",
    "阳光小区",
    "幸福里社区",
    "人民公园门口",
    "第一中学附近",
    "火车站南广场",
]
DETAILS = [
    "3号楼",
    "东门",
    "路口",
    "北侧",
    "对面",
    "旁边",
    "南头",
    "西边胡同",
    "公交站",
    "菜市场",
    "2单元",
    "停车场",
    "",
]
OPENERS = [
    "",
    "你好，",
    "您好，",
    "喂，",
    "我要反映一下，",
    "我想投诉，",
    "麻烦问一下，",
    "师傅，",
    "我是附近居民，",
    "你们好，我要举报，",
]
CLOSERS = [
    "",
    "麻烦尽快处理。",
    "都好几天了。",
    "希望有人管管。",
    "请尽快派人来看看。",
    "太危险了！",
    "谢谢。",
    "已经反映过好几次了。",
    "影响很大。",
    "有人管吗？",
]
TEMPLATES = [
    "{o}{p}{d}{x}，{c}",
    "{o}在{p}{d}，{x}。{c}",
    "{o}{x}，地点是{p}{d}。{c}",
    "{o}{p}{d}那里{x}{c}",
    "{x}！{p}{d}。{c}",
    "{o}反映{p}{d}{x}的问题，{c}",
]
# a few traditional forms (a caller typing on a Hong Kong or Taiwan keyboard) and typos
TRADITIONAL = str.maketrans(
    {
        "灯": "燈",
        "车": "車",
        "门": "門",
        "楼": "樓",
        "圾": "圾",
        "气": "氣",
        "区": "區",
        "树": "樹",
        "盖": "蓋",
        "进": "進",
        "烟": "煙",
        "饭": "飯",
        "馆": "館",
        "栏": "欄",
        "广": "廣",
        "积": "積",
        "漏": "漏",
        "脏": "髒",
        "厕": "廁",
        "暖": "暖",
        "东": "東",
    }
)
TYPOS = {"垃圾": "拉圾", "井盖": "井该", "暖气": "暖器", "油烟": "油咽", "停车": "听车"}


def _vary(text: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.1:
        return text.translate(TRADITIONAL)
    if roll < 0.2:
        for right, wrong in TYPOS.items():
            if right in text:
                return text.replace(right, wrong, 1)
    return text


def generate(*, seed: int, per_type: int = 60) -> list[dict[str, Any]]:
    """Return per_type labelled hotline texts for each event type, the same for the same seed."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for code in sorted(PHRASES):
        phrases = PHRASES[code]
        for _ in range(per_type):
            phrase = rng.randrange(len(phrases))
            text = rng.choice(TEMPLATES).format(
                o=rng.choice(OPENERS),
                p=rng.choice(PLACES),
                d=rng.choice(DETAILS),
                x=phrases[phrase],
                c=rng.choice(CLOSERS),
            )
            # the phrase index lets an evaluation hold out whole phrasings, not just sentences
            rows.append({"text": _vary(text, rng), "event_type": code, "phrase": phrase})
    rng.shuffle(rows)
    return rows


def write_jsonl(rows: list[dict[str, Any]], out: Path) -> int:
    """Write rows as JSON Lines; return how many."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a corpus written by write_jsonl (one {text, event_type[, phrase]} object a line)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            item: dict[str, Any] = {"text": str(row["text"]), "event_type": str(row["event_type"])}
            if isinstance(row.get("phrase"), int):
                item["phrase"] = row["phrase"]
            rows.append(item)
    return rows
