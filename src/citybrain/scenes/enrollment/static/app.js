// The parents' enrollment page: sign in with phone and code, pick a child from the household
// register, choose the address basis and rank schools, submit, follow status and appeal.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("enrollment-token"), household: null, rank: [] };

function say(text, bad) {
  const el = $("message");
  el.textContent = text || "";
  el.className = bad ? "bad" : "ok";
}

async function call(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const res = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const why = (data && (data.title || data.error_description)) || res.statusText;
    const err = new Error(why);
    err.status = res.status;
    throw err;
  }
  return data;
}

function node(tag, text, cls) {
  const el = document.createElement(tag);
  if (text !== undefined) el.textContent = text;
  if (cls) el.className = cls;
  return el;
}

async function sendCode() {
  try {
    const out = await call("POST", "/auth/otp/request", { phone: $("phone").value.trim() });
    say("验证码已发送至 " + out.phone);
  } catch (e) { say(e.message, true); }
}

async function signIn() {
  try {
    const out = await call("POST", "/auth/otp/verify",
      { phone: $("phone").value.trim(), code: $("code").value.trim() });
    state.token = out.access_token;
    sessionStorage.setItem("enrollment-token", state.token);
    say("已登录");
    await load();
  } catch (e) { say(e.message, true); }
}

function zonesFor(level) {
  return state.household.zones.filter((z) => !level || z.level === level);
}

function renderRanking() {
  const box = $("ranking");
  box.replaceChildren();
  const basis = $("basis").value;
  const level = $("level").value;
  let zone = null;
  if (basis === "property") {
    zone = state.household.zones.find((z) => z.zone_id === $("zone").value);
  } else {
    zone = state.household.zones.find((z) => z.home && z.level === level);
  }
  if (!zone) { box.append(node("p", "所在社区不在任何学区内", "bad")); return; }
  const schools = zone.schools.concat(
    state.household.private_schools.filter((p) => p.level === zone.level)
      .map((p) => ({ school_id: p.school_id, name: p.name + "（民办）", optional: true })));
  state.rank = zone.schools.map((s) => s.school_id);
  box.append(node("p", (zone.kind === "multi" ? "多校划片学区，请排序志愿：" : "单校划片学区：")
    + zone.zone_id, "muted"));
  const list = node("ol", undefined, "rank");
  const draw = () => {
    list.replaceChildren();
    for (const [i, id] of state.rank.entries()) {
      const school = schools.find((s) => s.school_id === id);
      const li = node("li", school ? school.name + " " : id + " ");
      li.dataset.school = id;
      if (i > 0) {
        const up = node("button", "上移", "small");
        up.type = "button";
        up.onclick = () => { state.rank.splice(i - 1, 0, state.rank.splice(i, 1)[0]); draw(); };
        li.append(up);
      }
      list.append(li);
    }
  };
  draw();
  box.append(list);
  for (const p of schools.filter((s) => s.optional)) {
    const label = node("label", "");
    const box2 = document.createElement("input");
    box2.type = "checkbox";
    box2.style.display = "inline";
    box2.style.width = "auto";
    box2.dataset.school = p.school_id;
    box2.onchange = () => {
      if (box2.checked) state.rank.unshift(p.school_id);
      else state.rank = state.rank.filter((x) => x !== p.school_id);
      draw();
    };
    label.append(box2, document.createTextNode(" 同时报名 " + p.name));
    box.append(label);
  }
}

function renderHousehold(h) {
  state.household = h;
  $("season").textContent = h.season.year + " 年招生 · 截止 " +
    new Date(h.season.deadline).toLocaleString("zh-CN") + " · " + h.season.status;
  const kids = $("children");
  kids.replaceChildren();
  if (!h.children.length) kids.append(node("p", "户籍登记中没有您家庭的子女", "bad"));
  for (const c of h.children) {
    kids.append(node("p", "子女：" + c.masked_name + "  " + c.masked_id));
  }
  const zone = $("zone");
  zone.replaceChildren();
  for (const z of zonesFor($("level").value)) {
    const opt = node("option", z.zone_id + "（" + (z.level === "primary" ? "小学" : "初中") + "）");
    opt.value = z.zone_id;
    zone.append(opt);
  }
  renderRanking();
}

function renderApplications(apps, appealsList) {
  const box = $("applications");
  box.replaceChildren();
  if (!apps.length) box.append(node("p", "尚未报名", "muted"));
  for (const a of apps) {
    const div = node("div", undefined, "app");
    div.dataset.application = a.id;
    div.append(node("p", a.child_name + " · " + (a.level === "primary" ? "小学一年级" : "初中一年级")));
    div.append(node("p", a.reason, a.priority_class === null ? "bad" : "ok"));
    if (a.school_id) div.append(node("p", "录取结果：" + a.school_id, "ok"));
    else div.append(node("p", "状态：" + a.status, "muted"));
    const mine = appealsList.filter((x) => x.application_id === a.id);
    for (const x of mine) {
      div.append(node("p", "申诉（" + x.criterion + "）：" + x.status +
        (x.decision_reason ? " · " + x.decision_reason : ""), "muted"));
    }
    const failed = Object.entries(a.checks).filter(([, ok]) => !ok).map(([c]) => c);
    if (a.appeal && failed.length && !mine.some((x) => x.status === "pending")) {
      div.append(node("p", a.appeal, "muted"));
      const pick = document.createElement("select");
      for (const c of failed) { const o = node("option", c); o.value = c; pick.append(o); }
      const text = document.createElement("input");
      text.placeholder = "申诉说明";
      const go = node("button", "提交申诉");
      go.type = "button";
      go.onclick = async () => {
        try {
          await call("POST", "/api/enrollment/applications/" + a.id + "/appeals",
            { criterion: pick.value, statement: text.value || "请复核" });
          say("申诉已提交");
          await refresh();
        } catch (e) { say(e.message, true); }
      };
      div.append(pick, text, go);
    }
    box.append(div);
  }
}

async function refresh() {
  const [apps, appealsList, notices] = await Promise.all([
    call("GET", "/api/enrollment/applications"),
    call("GET", "/api/enrollment/appeals"),
    call("GET", "/api/enrollment/notices"),
  ]);
  renderApplications(apps, appealsList);
  const ul = $("notices");
  ul.replaceChildren();
  for (const n of notices) ul.append(node("li", n.message));
  $("mine").hidden = false;
}

async function submit() {
  const body = { child_id_number: $("child-id").value.trim(), basis: $("basis").value,
    level: $("level").value, choices: state.rank };
  if (body.basis === "property") body.zone_id = $("zone").value;
  try {
    const out = await call("POST", "/api/enrollment/applications", body);
    say("已提交：" + out.reason, out.priority_class === null);
    await refresh();
  } catch (e) { say(e.message, true); }
}

async function load() {
  try {
    const h = await call("GET", "/api/enrollment/household");
    $("signin").hidden = true;
    $("apply").hidden = false;
    renderHousehold(h);
    await refresh();
  } catch (e) {
    if (e.status === 401) {
      state.token = null;
      sessionStorage.removeItem("enrollment-token");
      $("signin").hidden = false;
    }
    say(e.message, true);
  }
}

$("send").onclick = sendCode;
$("verify").onclick = signIn;
$("submit").onclick = submit;
$("basis").onchange = () => { $("zone-row").hidden = $("basis").value !== "property"; renderRanking(); };
$("zone").onchange = renderRanking;
$("level").onchange = () => { renderHousehold(state.household); };
if (state.token) load();
