// The grid workers' phone page: sign in with a code, report events, follow one's own reports.
"use strict";

const TOKEN_KEY = "citybrain.grid.token";
const STATES = {
  captured: "已采集 captured", verified: "已核实 verified", registered: "已立案 registered",
  dispatched: "已派遣 dispatched", handling: "处置中 handling", handled: "已处置 handled",
  resolved: "已核查 resolved", closed: "已结案 closed", rated: "已回访 rated",
  evaluated: "已评价 evaluated", discarded: "不予立案 discarded",
};
const state = { token: sessionStorage.getItem(TOKEN_KEY), me: null, lon: null, lat: null };
const $ = (id) => document.getElementById(id);

async function call(url, options = {}) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const res = await fetch(url, { ...options, headers });
  const body = res.status === 204 ? null : await res.json().catch(() => null);
  if (res.status === 401 && state.token) { signOut(); }
  if (!res.ok) {
    const text = body && (body.title || body.description || JSON.stringify(body));
    throw new Error(typeof text === "string" ? text : `HTTP ${res.status}`);
  }
  return body;
}

function show(signedIn) {
  $("signin-section").hidden = signedIn;
  for (const id of ["me-section", "report-section", "cases-section", "signout"]) $(id).hidden = !signedIn;
}

function signOut() {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  show(false);
}

function setWhere() {
  $("where").textContent = state.lon === null ? "—" : `${state.lon.toFixed(5)}, ${state.lat.toFixed(5)}`;
}

async function loadTypes() {
  const cat = await call("/api/events/catalogue");
  const select = $("event-type");
  select.innerHTML = "";
  for (const category of cat.categories) {
    for (const group of category.groups) {
      const optgroup = document.createElement("optgroup");
      optgroup.label = `${category.name_zh} / ${group.name_zh}`;
      for (const item of group.types) {
        const option = document.createElement("option");
        option.value = item.code;
        option.textContent = `${item.name_zh} ${item.name_en}`;
        optgroup.appendChild(option);
      }
      select.appendChild(optgroup);
    }
  }
}

async function loadCases() {
  const cases = await call("/api/events/cases?limit=50");
  const list = $("cases");
  list.innerHTML = "";
  for (const c of cases) {
    const li = document.createElement("li");
    li.dataset.id = c.id;
    const overdue = c.overdue ? ' <span class="overdue">超期 overdue</span>' : "";
    li.innerHTML = `<span class="state"></span>${overdue}<br><span class="desc"></span><br><small></small>`;
    li.querySelector(".state").textContent = STATES[c.state] || c.state;
    li.querySelector(".desc").textContent = c.description;
    li.querySelector("small").textContent = `${c.id} · ${c.department} · ${c.created_at.slice(0, 16).replace("T", " ")}`;
    li.addEventListener("click", () => showTimeline(c.id));
    list.appendChild(li);
  }
  if (!cases.length) list.innerHTML = "<li>暂无上报 No reports yet</li>";
}

async function showTimeline(id) {
  const steps = await call(`/api/events/cases/${encodeURIComponent(id)}/transitions`);
  $("timeline").hidden = false;
  $("timeline-title").textContent = id;
  const ol = $("timeline-steps");
  ol.innerHTML = "";
  for (const s of steps) {
    const li = document.createElement("li");
    li.textContent = `${s.at.slice(0, 16).replace("T", " ")} ${s.transition} → ${STATES[s.to_state] || s.to_state}${s.note ? " · " + s.note : ""}`;
    ol.appendChild(li);
  }
}

async function start() {
  show(true);
  state.me = await call("/api/events/grid/me");
  $("me").textContent = `${state.me.worker_id} · 网格 ${state.me.grid_name || state.me.grid_code}`;
  if (state.lon === null && state.me.centroid_lon !== null) {
    state.lon = state.me.centroid_lon;
    state.lat = state.me.centroid_lat;
  }
  setWhere();
  await loadTypes();
  await loadCases();
}

$("code-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("signin-error").textContent = "";
  try {
    await call("/auth/otp/request", { method: "POST", body: JSON.stringify({ phone: $("phone").value.trim() }) });
    $("signin-form").hidden = false;
    $("signin-note").textContent = "验证码已发送 Code sent";
  } catch (err) { $("signin-error").textContent = err.message; }
});

$("signin-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("signin-error").textContent = "";
  try {
    const answer = await call("/auth/grid/verify", {
      method: "POST", body: JSON.stringify({ phone: $("phone").value.trim(), code: $("code").value.trim() }),
    });
    state.token = answer.access_token;
    sessionStorage.setItem(TOKEN_KEY, state.token);
    await start();
  } catch (err) { $("signin-error").textContent = err.message; }
});

$("report-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("report-error").textContent = "";
  $("report-result").textContent = "";
  const body = {
    event_type: $("event-type").value,
    description: $("description").value,
    address: $("address").value || null,
    urgency: $("urgency").value,
    lon: state.lon,
    lat: state.lat,
  };
  try {
    const c = await call("/api/events/cases", { method: "POST", body: JSON.stringify(body) });
    $("report-result").textContent = `已上报 Reported: ${c.id} → ${c.department}`;
    $("description").value = "";
    await loadCases();
  } catch (err) { $("report-error").textContent = err.message; }
});

$("locate").addEventListener("click", () => {
  if (!navigator.geolocation) return;
  navigator.geolocation.getCurrentPosition((pos) => {
    state.lon = pos.coords.longitude;
    state.lat = pos.coords.latitude;
    setWhere();
  }, (err) => { $("report-error").textContent = `定位失败 Location failed: ${err.message}`; });
});

$("refresh").addEventListener("click", () => loadCases().catch((err) => { $("report-error").textContent = err.message; }));
$("signout").addEventListener("click", signOut);

if (state.token) start().catch(() => signOut()); else show(false);
