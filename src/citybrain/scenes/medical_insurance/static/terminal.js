// The terminal page of a designated institution: scan a voucher payload for a transaction,
// see the person (masked), submit the settlement and read the check's answer.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  $("bearer").value = sessionStorage.getItem("medins.terminal") || "";

  async function call(path, body) {
    const token = $("bearer").value.trim();
    sessionStorage.setItem("medins.terminal", token);
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    return { status: response.status, data };
  }

  $("scan").onclick = async () => {
    const { status, data } = await call("/api/medins/vouchers/scan", {
      token: $("scanned").value.trim(), transaction: $("transaction").value,
    });
    $("person").textContent = status + "\n" + JSON.stringify(data, null, 2);
  };
  $("settle").onclick = async () => {
    let body;
    try { body = JSON.parse($("settlement").value); }
    catch (err) { $("answer").textContent = "not JSON: " + err.message; return; }
    body.voucher = $("scanned").value.trim();
    const { status, data } = await call("/api/medins/settlements", body);
    $("answer").textContent = status + "\n" + JSON.stringify(data, null, 2);
  };
})();
