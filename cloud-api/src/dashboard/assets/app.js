// The dashboard's only script: written here, no library. Pages work without it; it adds
// whole-row links, filters applied on change, and the defect boxes' toggle.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // A results row opens its part (a tablet has no hover; the whole row is the target).
  for (const row of document.querySelectorAll("#results tbody tr[data-id]")) {
    row.addEventListener("click", (e) => {
      if (e.target.closest("a")) return;
      window.location.href = "/results/" + row.dataset.id;
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
});
