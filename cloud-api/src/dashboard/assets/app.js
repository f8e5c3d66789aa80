// The dashboard's only script: written here, no library. Pages work without it; it adds
// whole-row links, filters applied on change, and the defect boxes' and heat map's toggles.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // A results row opens its part (a tablet has no hover; the whole row is the target).
  for (const row of document.querySelectorAll("#results tbody tr[data-id]")) {
    row.addEventListener("click", (e) => {
      if (e.target.closest("a, input, td.pick")) return;
      window.location.href = "/results/" + row.dataset.id;
    });
  }
  // Bulk review: the header's box selects every judged part on the page.
  const all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", () => {
      for (const box of document.querySelectorAll("#results tbody input[name=id]")) {
        box.checked = all.checked;
      }
    });
  }
  // Choosing a verdict or defect type applies the filters at once.
  for (const select of document.querySelectorAll("form.filters select")) {
    select.addEventListener("change", () => select.form.requestSubmit());
  }
  // The defect boxes can be hidden to see the part beneath them.
  const boxes = document.getElementById("boxes");
  const toggle = document.getElementById("toggle-boxes");
  if (boxes && toggle) {
    toggle.addEventListener("change", () => {
      boxes.classList.toggle("hidden", !toggle.checked);
    });
  }
  // The heat map is drawn by the server on the first toggle, then shown or hidden over the
  // image without a reload.
  const heat = document.getElementById("heat");
  const heatToggle = document.getElementById("toggle-heat");
  if (heat && heatToggle) {
    heatToggle.addEventListener("change", () => {
      if (heatToggle.checked && !heat.getAttribute("src")) heat.src = heat.dataset.src;
      heat.classList.toggle("hidden", !heatToggle.checked);
    });
  }
});

// Live: each NG part committed on any replica is prepended as it arrives. EventSource
// reconnects by itself and sends Last-Event-ID, so nothing is missed across a reconnect.
document.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("#live tbody");
  const status = document.getElementById("live-status");
  if (!table) return;
  const cell = (row, text, cls) => {
    const td = row.insertCell();
    if (cls) td.className = cls;
    if (text !== undefined) td.textContent = text;
    return td;
  };
  const link = (id, child) => {
    const a = document.createElement("a");
    a.href = "/results/" + id;
    a.append(child);
    return a;
  };
  const source = new EventSource("/live/events");
  source.addEventListener("open", () => { status.textContent = "Live: new NG parts appear at the top."; });
  source.addEventListener("error", () => { status.textContent = "Reconnecting to the live feed…"; });
  source.addEventListener("lagged", () => window.location.reload());
  source.addEventListener("result", (e) => {
    const a = JSON.parse(e.data);
    if (table.querySelector(`tr[data-id="${a.id}"]`)) return;
    const row = table.insertRow(0);
    row.dataset.id = a.id;
    row.className = "fresh";
    const img = document.createElement("img");
    img.src = "/results/" + a.id + "/thumbnail";
    img.alt = "part";
    img.width = 96;
    img.height = 54;
    cell(row, undefined, "thumb").append(link(a.id, img));
    cell(row, undefined, "mono").append(link(a.id, a.timestamp.replace("T", " ").slice(0, 19)));
    cell(row, `${a.facility} · ${a.line} / ${a.station}`);
    cell(row, a.product_sku);
    cell(row, a.part_id || "–", "mono");
    const badge = document.createElement("span");
    badge.className = a.defect_detected ? "badge ng" : "badge ok";
    badge.textContent = a.defect_detected ? "NG" : "OK";
    cell(row).append(badge);
    const kinds = cell(row);
    const counts = new Map();
    for (const d of a.defects) counts.set(d.type, (counts.get(d.type) || 0) + 1);
    for (const [kind, n] of counts) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = kind.replace("_", " ") + (n > 1 ? " ×" + n : "");
      kinds.append(tag);
    }
  });
});
