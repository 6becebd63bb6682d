// The phone page of the e-voucher: sign in with phone and code, activate once, then show a
// fresh QR payload every minute. The device id stays in this browser's storage: the voucher
// is bound to it.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = { token: sessionStorage.getItem("medins.token"), timer: null };
  let device = localStorage.getItem("medins.device");
  if (!device) {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    device = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem("medins.device", device);
  }
  const say = (text) => { $("message").textContent = text; };

  async function call(method, path, body) {
    const headers = { "Content-Type": "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    const response = await fetch(path, {
      method, headers, body: body ? JSON.stringify(body) : undefined,
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.title || ("HTTP " + response.status));
    return data;
  }

  function show(section) {
    for (const id of ["signin", "activate", "card"]) $(id).hidden = id !== section;
  }

  async function refresh() {
    try {
      const qr = await call("POST", "/api/medins/voucher/qr", { device_id: device });
      $("payload").textContent = qr.token;
      const end = Date.parse(qr.expires_at);
      clearInterval(state.timer);
      state.timer = setInterval(() => {
        const left = Math.max(0, Math.round((end - Date.now()) / 1000));
        $("left").textContent = String(left);
        if (left <= 10) refresh();
      }, 1000);
      say("");
    } catch (err) { say(err.message); }
  }

  async function start() {
    if (!state.token) { show("signin"); return; }
    try {
      const v = await call("GET", "/api/medins/voucher");
      $("holder").textContent = `${v.name} ${v.id_number} · ${v.scheme}`;
      show("card");
      refresh();
    } catch (err) {
      show("activate");
      say(err.message);
    }
  }

  $("send").onclick = async () => {
    try { await call("POST", "/auth/otp/request", { phone: $("phone").value }); say("验证码已发送 code sent"); }
    catch (err) { say(err.message); }
  };
  $("verify").onclick = async () => {
    try {
      const t = await call("POST", "/auth/otp/verify", { phone: $("phone").value, code: $("code").value });
      state.token = t.access_token;
      sessionStorage.setItem("medins.token", state.token);
      start();
    } catch (err) { say(err.message); }
  };
  $("activate-btn").onclick = async () => {
    try {
      await call("POST", "/api/medins/voucher/activate", { id_number: $("idnumber").value, device_id: device });
      start();
    } catch (err) { say(err.message); }
  };
  $("refresh").onclick = refresh;
  start();
})();
