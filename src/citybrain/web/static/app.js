// The one screen of a node: map with drill-down, indicators, live events, departments, nodes.
// Plain JS, every asset served by the node itself (works offline, no CDN).
"use strict";

const TOKEN_KEY = "citybrain.token";
const state = {
  lang: localStorage.getItem("citybrain.lang") || "zh",
  token: null,
  node: null,
  children: [],
  peers: {},
  tree: "u4ssc",
  area: null, // the unit whose children the map shows
  features: null,
  scores: {},
  seen: new Set(),
  timer: null,
};
const LEVELS = {
  zh: { province: "省", city: "市", county: "县区", street: "街道" },
  en: { province: "province", city: "city", county: "county", street: "street" },
};
const CHILD_LEVEL = { province: "city", city: "county", county: "street" };
const STATES_ZH = {
  captured: "已上报", verified: "已核实", registered: "已立案", dispatched: "已派遣",
  handling: "处置中", handled: "已反馈", resolved: "已核查", closed: "已结案",
  rated: "已评价", evaluated: "已归档", discarded: "已作废",
};
const NODE_STATES = {
  zh: { ok: "正常", stale: "失联", never: "未联系", absent: "无节点" },
  en: { ok: "ok", stale: "stale", never: "never", absent: "no node" },
};

class SignInNeeded extends Error {}

function t(zh, en) {
  return state.lang === "zh" ? zh : en;
}

async function getJSON(url, auth) {
  const headers = { Accept: "application/json" };
  if (auth) {
    if (!state.token) throw new SignInNeeded("no token");
    headers.Authorization = `Bearer ${state.token}`;
  }
  const res = await fetch(url, { headers });
  if (res.status === 401 && auth) throw new SignInNeeded("token refused");
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

function stars(n) {
  return n ? "★".repeat(n) + "☆".repeat(Math.max(0, 5 - n)) : "";
}

function shortTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (x) => String(x).padStart(2, "0");
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function applyLang() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-zh]").forEach((el) => {
    el.textContent = el.dataset[state.lang];
  });
  document.getElementById("lang").textContent = state.lang === "zh" ? "English" : "中文";
}

// ---------------------------------------------------------------- sign-in

function takeToken() {
  const hash = new URLSearchParams(window.location.hash.slice(1));
  const fromUrl = hash.get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    // the token must not stay in the address bar, the history or a shared screenshot
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function showSignIn(message) {
  stopPolling();
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  document.getElementById("signin-section").hidden = false;
  document.getElementById("signout").hidden = true;
  document.querySelectorAll("section.live").forEach((s) => { s.hidden = true; });
  document.getElementById("signin-error").textContent = message || "";
  document.body.dataset.signin = "true";
}

async function signIn(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = new URLSearchParams({
    grant_type: "password",
    username: form.get("username"),
    password: form.get("password"),
  });
  const res = await fetch("/auth/token", {
    method: "POST",
    // the token endpoint answers a wrong password with a Basic challenge; without
    // credentials the browser hands the 401 to the page instead of opening its own dialog
    credentials: "omit",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
    body,
  });
  const answer = await res.json().catch(() => ({}));
  if (!res.ok || !answer.access_token) {
    document.getElementById("signin-error").textContent =
      answer.error_description || answer.detail || t("登录失败", "Sign-in failed");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, answer.access_token);
  state.token = answer.access_token;
  event.target.reset();
  await startLive();
}

// ---------------------------------------------------------------- nodes

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
    tr.append(text("td", n.self ? t("本节点", "this node") : shortTime(n.last_seen_at)));
    const peer = state.peers[n.code];
    const s = n.self ? "ok" : peer ? peer.state : "";
    tr.append(text("td", s ? NODE_STATES[state.lang][s] || s : "", s));
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

// ---------------------------------------------------------------- map

function chartsAvailable() {
  return !window.__noCharts && typeof echarts !== "undefined";
}

function featureName(code) {
  const f = state.features && state.features.features.find((x) => x.properties.code === code);
  return f ? unitName(f.properties) : code;
}

async function showArea(area) {
  state.area = area;
  const level = CHILD_LEVEL[area.level];
  document.getElementById("map-title").textContent = unitName(area);
  document.getElementById("map-up").hidden = area.code === state.node.code;
  state.features = await getJSON(`/geo/features?level=${level}&parent=${area.code}`);
  document.body.dataset.mapLevel = level;
  document.body.dataset.mapUnits = String(state.features.features.length);
  drawMap();
  if (state.token) await loadIndicators().catch(handleError);
}

function drawMap() {
  if (!chartsAvailable()) {
    document.getElementById("map").hidden = true;
    document.getElementById("map-note").hidden = false;
    return;
  }
  const key = `area-${state.area.code}`;
  echarts.registerMap(key, state.features);
  const chart = window.__chart || echarts.init(document.getElementById("map"));
  if (!window.__chart) {
    window.__chart = chart;
    window.addEventListener("resize", () => chart.resize());
    chart.on("click", (p) => drill(p.name).catch(handleError));
  }
  const level = CHILD_LEVEL[state.area.level];
  const scored = Object.values(state.scores).some((v) => v && v.score !== null);
  chart.setOption({
    tooltip: {
      trigger: "item",
      formatter: (p) => {
        const s = state.scores[p.name];
        return s && s.score !== null ? `${featureName(p.name)}<br>${s.score.toFixed(1)} ${stars(s.stars)}` : featureName(p.name);
      },
    },
    visualMap: scored ? {
      min: 0, max: 100, left: 8, bottom: 8, calculable: false, textStyle: { color: "#e6edf3" },
      inRange: { color: ["#7a2e2e", "#b08a2e", "#2e7a4f"] },
    } : undefined,
    series: [{
      type: "map", map: key, nameProperty: "code", roam: true,
      label: { show: level !== "street", formatter: (p) => featureName(p.name), color: "#e6edf3", fontSize: 10 },
      itemStyle: { areaColor: "#17406b", borderColor: "#8fb3d9" },
      emphasis: { itemStyle: { areaColor: "#1f6feb" } },
      data: state.features.features.map((f) => {
        const s = state.scores[f.properties.code];
        return s && s.score !== null ? { name: f.properties.code, value: s.score } : { name: f.properties.code };
      }),
    }],
  }, { notMerge: true });
}

async function drill(code) {
  // a province's city opens onto its counties; below that the map stays
  if (state.area.level !== "province") return;
  const unit = await getJSON(`/geo/units/${code}`);
  await showArea(unit);
}

// ---------------------------------------------------------------- indicators

async function loadTrees() {
  const trees = await getJSON("/api/indicators/trees", true);
  const select = document.getElementById("tree");
  select.replaceChildren();
  for (const tr of trees) {
    const opt = text("option", state.lang === "zh" ? tr.name_zh || tr.id : tr.name_en || tr.id);
    opt.value = tr.id;
    opt.title = tr.name_en || tr.id;
    select.append(opt);
  }
  if (!trees.some((x) => x.id === state.tree) && trees.length) state.tree = trees[0].id;
  select.value = state.tree;
}

async function loadIndicators() {
  const units = [state.area.code, ...state.features.features.map((f) => f.properties.code)].slice(0, 200);
  const compared = await getJSON(
    `/api/indicators/compare?tree=${encodeURIComponent(state.tree)}&units=${units.join(",")}`, true);
  const total = compared.rows.find((r) => r.kind === "tree") || { values: {} };
  state.scores = total.values;
  document.getElementById("indicator-area").textContent = unitName(state.area);
  document.getElementById("indicator-period").textContent = compared.period || t("未计算", "not computed");
  const tbody = document.querySelector("#indicators tbody");
  tbody.replaceChildren();
  for (const code of units) {
    const v = total.values[code] || {};
    const tr = document.createElement("tr");
    tr.dataset.code = code;
    if (code === state.area.code) tr.className = "own";
    tr.append(
      text("td", code === state.area.code ? unitName(state.area) : featureName(code)),
      text("td", v.score === null || v.score === undefined ? "–" : v.score.toFixed(1), "num"),
      text("td", stars(v.stars), "stars"),
      text("td", v.status || ""),
    );
    tbody.append(tr);
  }
  drawMap();
}

// ---------------------------------------------------------------- events

function renderFeed(cases) {
  const tbody = document.querySelector("#feed tbody");
  const rows = cases.map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.id = c.id;
    const classes = [];
    if (c.overdue) classes.push("overdue");
    if (state.seen.size && !state.seen.has(c.id)) classes.push("new");
    tr.className = classes.join(" ");
    tr.title = c.description;
    tr.append(
      text("td", shortTime(c.created_at)),
      text("td", state.lang === "zh" ? c.event_type_zh : c.event_type),
      text("td", c.department),
      text("td", state.lang === "zh" ? STATES_ZH[c.state] || c.state : c.state),
      text("td", c.deadline ? shortTime(c.deadline) : "–"),
    );
    return tr;
  });
  tbody.replaceChildren(...rows);
  for (const c of cases) state.seen.add(c.id);
}

function renderCounts(summary) {
  const parts = [
    `${t("在办", "open")} ${summary.events_open}`,
    `${t("超期", "overdue")} ${summary.events_overdue}`,
  ];
  const el = document.getElementById("event-counts");
  el.textContent = parts.join(" · ");
  el.className = summary.events_overdue ? "overdue" : "";
}

async function loadStats() {
  const stats = await getJSON("/api/events/stats", true);
  const tbody = document.querySelector("#stats tbody");
  tbody.replaceChildren();
  for (const d of stats.departments) {
    const tr = document.createElement("tr");
    tr.append(
      text("td", d.department),
      text("td", d.received, "num"),
      text("td", d.closed, "num"),
      text("td", d.on_time_rate === null ? "–" : `${Math.round(d.on_time_rate * 100)}%`, "num"),
      text("td", d.overdue, d.overdue ? "num overdue" : "num"),
      text("td", d.satisfaction_mean === null ? "–" : d.satisfaction_mean.toFixed(1), "num"),
    );
    tbody.append(tr);
  }
}

async function loadPeers() {
  const peers = await getJSON("/api/federation/peers", true);
  state.peers = Object.fromEntries(peers.map((p) => [p.code, p]));
  renderNodes();
}

// ---------------------------------------------------------------- scene panels
// A panel's data is either in the panel form (cards, table, bars; docs/plugins.md) or any
// JSON object, shown generically: numbers as cards, objects and lists of objects as tables.

function label(item, fallback) {
  return t(item.label_zh || item.label_en || fallback, item.label_en || item.label_zh || fallback);
}

function cardsOf(cards) {
  const box = document.createElement("div");
  box.className = "cards";
  for (const c of cards) {
    const card = document.createElement("div");
    card.className = "card";
    card.append(text("span", label(c, c.key || ""), "card-label"));
    const value = typeof c.value === "number" ? c.value.toLocaleString() : c.value;
    card.append(text("strong", c.unit ? `${value} ${c.unit}` : value, "card-value"));
    box.append(card);
  }
  return box;
}

function tableOf(columns, rows) {
  const table = document.createElement("table");
  const head = document.createElement("tr");
  for (const col of columns) head.append(text("th", label(col, col.key)));
  table.append(document.createElement("thead"));
  table.tHead.append(head);
  const body = document.createElement("tbody");
  for (const row of rows.slice(0, 20)) {
    const tr = document.createElement("tr");
    for (const col of columns) {
      const v = row[col.key];
      tr.append(text("td", v !== null && typeof v === "object" ? JSON.stringify(v) : v));
    }
    body.append(tr);
  }
  table.append(body);
  return table;
}

function isScalar(v) {
  return v === null || ["string", "number", "boolean"].includes(typeof v);
}

function genericPanel(data, box) {
  const cards = [];
  for (const [key, value] of Object.entries(data || {})) {
    if (isScalar(value)) { cards.push({ key, value }); continue; }
    const title = text("h3", key);
    if (Array.isArray(value) && value.length && typeof value[0] === "object") {
      const keys = [...new Set(value.flatMap((r) => Object.keys(r)))].slice(0, 8);
      box.append(title, tableOf(keys.map((k) => ({ key: k })), value));
    } else if (!Array.isArray(value) && typeof value === "object") {
      const entries = Object.entries(value);
      if (entries.every(([, v]) => v && typeof v === "object" && !Array.isArray(v))) {
        const keys = [...new Set(entries.flatMap(([, v]) => Object.keys(v)))].slice(0, 8);
        const rows = entries.map(([name, v]) => ({ name, ...v }));
        box.append(title, tableOf([{ key: "name" }, ...keys.map((k) => ({ key: k }))], rows));
      } else {
        const rows = entries.map(([name, v]) => ({ name, value: v }));
        box.append(title, tableOf([{ key: "name" }, { key: "value" }], rows));
      }
    }
  }
  if (cards.length) box.prepend(cardsOf(cards));
}

function barsOf(bars) {
  const holder = document.createElement("div");
  holder.className = "panel-chart";
  if (!chartsAvailable()) {
    holder.append(tableOf([{ key: "name" }, { key: "value" }], bars.items || []));
    return holder;
  }
  requestAnimationFrame(() => {
    const chart = window.echarts.init(holder);
    chart.setOption({
      grid: { left: 110, right: 20, top: 10, bottom: 20 },
      xAxis: { type: "value" },
      yAxis: { type: "category", data: (bars.items || []).map((i) => i.name) },
      series: [{ type: "bar", data: (bars.items || []).map((i) => i.value), name: label(bars, "") }],
      tooltip: {},
    });
  });
  return holder;
}

function renderPanel(section, data) {
  const box = section.querySelector(".panel-body");
  box.textContent = "";
  if (data && (data.cards || data.table || data.bars)) {
    if (data.cards) box.append(cardsOf(data.cards));
    if (data.table) box.append(tableOf(data.table.columns || [], data.table.rows || []));
    if (data.bars) box.append(barsOf(data.bars));
  } else {
    genericPanel(data, box);
  }
}

async function loadPanels() {
  const panels = await getJSON("/api/dashboard/panels", true);
  const holder = document.getElementById("panels");
  holder.hidden = panels.length === 0;
  for (const panel of panels) {
    let section = document.getElementById(`panel-${panel.id}`);
    if (!section) {
      section = document.createElement("section");
      section.id = `panel-${panel.id}`;
      section.className = "scene-panel";
      section.dataset.plugin = panel.plugin;
      section.append(text("h2", t(panel.title_zh, panel.title_en)), text("div", "", "panel-body"));
      holder.append(section);
    }
    section.querySelector("h2").textContent = t(panel.title_zh, panel.title_en);
    try {
      renderPanel(section, await getJSON(panel.data_url, true));
      section.dataset.state = "ok";
    } catch (err) {
      if (err instanceof SignInNeeded) throw err;
      // one scene's failure stays in its panel
      section.querySelector(".panel-body").textContent = t("暂无数据", "No data") + ` (${err.message})`;
      section.dataset.state = "error";
    }
  }
}

async function pollOnce() {
  const cases = await getJSON("/api/events/cases?limit=20", true);
  renderFeed(cases);
}

let ticks = 0;
function startPolling() {
  stopPolling();
  state.timer = setInterval(() => {
    ticks += 1;
    pollOnce().catch(handleError);
    // the aggregates move slowly: refresh them every 5 s
    if (ticks % 5 === 0) {
      getJSON(`/api/dashboard/summary?tree=${encodeURIComponent(state.tree)}&cases=0`, true)
        .then(renderCounts).catch(handleError);
      loadStats().catch(handleError);
      loadPeers().catch(handleError);
    }
    if (ticks % 10 === 0) loadPanels().catch(handleError);
  }, 1000);
}

function stopPolling() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

function handleError(err) {
  if (err instanceof SignInNeeded) {
    showSignIn(t("请登录", "Please sign in"));
    return;
  }
  document.getElementById("node-meta").textContent = String(err);
}

async function startLive() {
  document.getElementById("signin-section").hidden = true;
  document.getElementById("signout").hidden = false;
  document.querySelectorAll("section.live").forEach((s) => { s.hidden = false; });
  delete document.body.dataset.signin;
  try {
    const summary = await getJSON(`/api/dashboard/summary?tree=${encodeURIComponent(state.tree)}`, true);
    renderCounts(summary);
    renderFeed(summary.cases);
    await loadTrees();
    await Promise.all([loadIndicators(), loadStats(), loadPeers(), loadPanels()]);
    startPolling();
    document.body.dataset.live = "true";
  } catch (err) {
    handleError(err);
  }
}

// ---------------------------------------------------------------- start

async function load() {
  applyLang();
  state.node = await getJSON("/api/node");
  state.children = (await getJSON("/api/nodes")) || [];
  document.getElementById("node-name").textContent = `CityBrain · ${unitName(state.node)}`;
  document.getElementById("node-meta").textContent = `${state.node.code} · ${state.node.level} · v${state.node.version}`;
  document.title = `CityBrain · ${unitName(state.node)}`;
  renderNodes();
  renderDatasets();
  const token = takeToken();
  await showArea(state.node);
  document.body.dataset.ready = "true";
  state.token = token;
  if (state.token) await startLive();
  else showSignIn("");
}

document.getElementById("lang").addEventListener("click", () => {
  state.lang = state.lang === "zh" ? "en" : "zh";
  localStorage.setItem("citybrain.lang", state.lang);
  applyLang();
  renderNodes();
  if (state.area) {
    document.getElementById("map-title").textContent = unitName(state.area);
    drawMap();
  }
  if (state.node) document.getElementById("node-name").textContent = `CityBrain · ${unitName(state.node)}`;
});
document.getElementById("signin").addEventListener("submit", (e) => signIn(e).catch(handleError));
document.getElementById("signout").addEventListener("click", () => showSignIn(""));
document.getElementById("map-up").addEventListener("click", () => showArea(state.node).catch(handleError));
document.getElementById("tree").addEventListener("change", (e) => {
  state.tree = e.target.value;
  loadIndicators().catch(handleError);
});

load().catch((err) => {
  document.body.dataset.ready = "error";
  document.getElementById("node-meta").textContent = String(err);
});
