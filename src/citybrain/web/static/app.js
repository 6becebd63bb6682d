// Node overview: this node, its children and their data; the map when ECharts is built in.
"use strict";

const state = { lang: localStorage.getItem("citybrain.lang") || "zh", node: null, children: [] };
const LEVELS = {
  zh: { province: "省", city: "市", county: "县区" },
  en: { province: "province", city: "city", county: "county" },
};

async function getJSON(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value === undefined || value === null ? "" : String(value);
  if (cls) el.className = cls;
  return el;
}

function sumRows(datasets) {
  return (datasets || []).reduce((acc, d) => acc + (d.rows || 0), 0);
}

function unitName(unit) {
  if (!unit) return "";
  return state.lang === "zh" ? unit.name_zh || unit.name : unit.name_en || unit.name;
}

function applyLang() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-zh]").forEach((el) => {
    el.textContent = el.dataset[state.lang];
  });
  document.getElementById("lang").textContent = state.lang === "zh" ? "English" : "中文";
}

function renderNodes() {
  const tbody = document.querySelector("#nodes tbody");
  tbody.replaceChildren();
  const rows = [];
  if (state.node) rows.push({ ...state.node, self: true });
  for (const c of state.children) rows.push(c);
  for (const n of rows) {
    const tr = document.createElement("tr");
    tr.dataset.code = n.code;
    tr.append(text("td", n.code), text("td", unitName(n)), text("td", LEVELS[state.lang][n.level] || n.level));
    const urlCell = document.createElement("td");
    const url = n.self ? window.location.origin : n.url;
    if (url) {
      const a = text("a", url);
      a.href = url;
      urlCell.append(a);
    }
    tr.append(urlCell);
    const datasets = n.self ? n.datasets : (n.last_summary || {}).datasets;
    tr.append(text("td", (datasets || []).length, "num"), text("td", sumRows(datasets).toLocaleString(), "num"));
    const seen = n.self ? (state.lang === "zh" ? "本节点" : "this node") : n.last_seen_at || "";
    tr.append(text("td", seen, n.stale ? "stale" : ""));
    tbody.append(tr);
  }
}

function renderDatasets() {
  const tbody = document.querySelector("#datasets tbody");
  tbody.replaceChildren();
  for (const d of (state.node && state.node.datasets) || []) {
    const tr = document.createElement("tr");
    tr.append(text("td", d.department), text("td", d.name), text("td", (d.rows || 0).toLocaleString(), "num"));
    tbody.append(tr);
  }
}

async function renderMap() {
  if (window.__noCharts || typeof echarts === "undefined") {
    document.getElementById("map").hidden = true;
    document.getElementById("map-note").hidden = false;
    return;
  }
  const node = state.node;
  const childLevel = { province: "city", city: "county", county: "street" }[node.level];
  const features = await getJSON(`/geo/features?level=${childLevel}&parent=${node.code}`);
  echarts.registerMap("area", features);
  const live = new Set(state.children.map((c) => c.code));
  const chart = echarts.init(document.getElementById("map"));
  chart.setOption({
    tooltip: { trigger: "item", formatter: (p) => p.name },
    series: [{
      type: "map", map: "area", nameProperty: "code", roam: true,
      label: { show: childLevel !== "street", formatter: (p) => featureName(features, p.name), color: "#e6edf3", fontSize: 10 },
      itemStyle: { areaColor: "#17406b", borderColor: "#8fb3d9" },
      emphasis: { itemStyle: { areaColor: "#1f6feb" } },
      data: features.features.map((f) => ({
        name: f.properties.code,
        itemStyle: { areaColor: live.has(f.properties.code) ? "#1f6feb" : "#17406b" },
      })),
    }],
  });
  window.__chart = chart;
  window.addEventListener("resize", () => chart.resize());
}

function featureName(features, code) {
  const f = features.features.find((x) => x.properties.code === code);
  return f ? unitName(f.properties) : code;
}

async function load() {
  applyLang();
  state.node = await getJSON("/api/node");
  state.children = (await getJSON("/api/nodes")) || [];
  document.getElementById("node-name").textContent = `CityBrain · ${unitName(state.node)}`;
  document.getElementById("node-meta").textContent = `${state.node.code} · ${state.node.level} · v${state.node.version}`;
  document.title = `CityBrain · ${unitName(state.node)}`;
  renderNodes();
  renderDatasets();
  await renderMap();
  document.body.dataset.ready = "true";
}

document.getElementById("lang").addEventListener("click", () => {
  state.lang = state.lang === "zh" ? "en" : "zh";
  localStorage.setItem("citybrain.lang", state.lang);
  applyLang();
  renderNodes();
  if (state.node) document.getElementById("node-name").textContent = `CityBrain · ${unitName(state.node)}`;
});

load().catch((err) => {
  document.body.dataset.ready = "error";
  document.getElementById("node-meta").textContent = String(err);
});
