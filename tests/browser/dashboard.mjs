// The dashboard driven in the system's Chromium by playwright-core. Started by the cargo test
// `dashboard` (tests/e2e/dashboard.rs) with:
//   WIKO_URL     the cloud's URL
//   WIKO_KEY     a viewer key
//   WIKO_EXPECT  the API's numbers (JSON) the pages must show
//   WIKO_SHOTS   where the screenshots go
//   WIKO_DEVICE_KEY, WIKO_NG_FRAME  a device key and an NG frame (meta JSON and image file) to
//                send while the Live page is open
//   WIKO_ADMIN_KEY  an admin key, to add a false NG to its golden set
// Every check reads the DOM; a failed one exits non-zero naming it.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const url = process.env.WIKO_URL;
const key = process.env.WIKO_KEY;
const expect = JSON.parse(process.env.WIKO_EXPECT);
const shots = process.env.WIKO_SHOTS;

function check(what, actual, wanted) {
  if (JSON.stringify(actual) !== JSON.stringify(wanted)) {
    throw new Error(`${what}: got ${JSON.stringify(actual)}, want ${JSON.stringify(wanted)}`);
  }
  console.log(`ok ${what}: ${JSON.stringify(actual)}`);
}

const browser = await chromium.launch({
  executablePath: process.env.WIKO_CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const shot = async (name) => {
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  };

  // Without a session every page leads to the sign-in form.
  await page.goto(`${url}/results`);
  check("a page without a session redirects to", new URL(page.url()).pathname, "/signin");
  await shot("signin");
  await page.fill("#key", "not-a-key-of-this-cloud");
  await page.click("button[type=submit]");
  check("a wrong key is told", await page.locator("p.error").count(), 1);
  await page.fill("#key", key);
  await Promise.all([page.waitForURL(`${url}/overview`), page.click("button[type=submit]")]);

  // Overview (the first page): this shift's parts and NG, as the API counts them.
  check("overview parts", Number(await page.textContent("#kpi-parts")), expect.parts);
  check("overview NG", Number(await page.textContent("#kpi-ng")), expect.ng);
  check("overview stations", await page.locator("#stations tr[data-station]").count(), 2);
  check("Pareto bars", await page.locator("#pareto g.bar").count(), expect.defect_types);
  await shot("overview");

  // Live: an NG part sent now appears at the top within 2 s of its upload's answer.
  await page.click("nav a[href='/live']");
  await page.waitForFunction(() => document.getElementById("live-status").textContent.startsWith("Live"));
  const frame = JSON.parse(process.env.WIKO_NG_FRAME);
  const form = new FormData();
  form.append("meta", new Blob([JSON.stringify(frame.meta)], { type: "application/json" }));
  form.append("image", new Blob([readFileSync(frame.image)], { type: "image/jpeg" }), "part.jpg");
  const put = await fetch(`${url}/api/v1/frames/${frame.meta.frame_id}`, {
    method: "PUT", headers: { "X-API-Key": process.env.WIKO_DEVICE_KEY }, body: form,
  });
  check("the NG frame is taken", put.status, 201);
  const { analysis_id } = await put.json();
  const sent = Date.now();
  await page.waitForSelector(`#live tbody tr[data-id="${analysis_id}"]`, { timeout: 2000 });
  console.log(`ok the NG part is on Live ${Date.now() - sent} ms after its upload was answered`);
  check("it is the first row", await page.getAttribute("#live tbody tr", "data-id"), analysis_id);
  await shot("live");
  expect.parts += 1;
  expect.ng += 1;

  await page.click("nav a[href='/results']");

  // Results: every part, the NG ones marked.
  const shown = Math.min(expect.parts, 50);
  check("parts listed", Number(await page.textContent("#result-count")), shown);
  check("rows", await page.locator("#results tbody tr[data-id]").count(), shown);
  check("NG rows", await page.locator("#results tr[data-verdict=ng]").count(), expect.ng);
  await page.waitForFunction(() =>
    [...document.querySelectorAll("#results img")].every((i) => i.complete && i.naturalWidth > 0));
  await shot("results");
  await page.selectOption("select[name=defect_detected]", "true");
  await page.waitForURL(/defect_detected=true/);
  check("NG filter", Number(await page.textContent("#result-count")), expect.ng);
  // The CSV export of the filtered set: the API's list, row for row.
  const api = async (path) => {
    const r = await fetch(`${url}${path}`, { headers: { "X-API-Key": key } });
    return r.json();
  };
  const exportHref = await page.getAttribute("#export-csv", "href");
  check("the export carries the filter", exportHref, "/results/export.csv?defect_detected=true");
  const csv = await page.request.get(`${url}${exportHref}`);
  check("the export answers", csv.status(), 200);
  const csvIds = (await csv.text()).trim().split("\n").slice(1).map((l) => l.split(",")[0]);
  const listed = (await api("/api/v1/analyses?defect_detected=true&limit=500")).items.map((a) => a.id);
  check("CSV rows are the API's list", csvIds, listed);

  // The part's detail: the image with each defect boxed, the model that judged it.
  await page.click(`tr[data-id="${expect.ng_id}"] td.mono a`);
  await page.waitForURL(`${url}/results/${expect.ng_id}`);
  check("defect boxes", await page.locator("#boxes g.defect").count(), expect.ng_boxes);
  check("model version", await page.textContent("#model-version"), expect.ng_model_version);
  await page.waitForFunction(() => document.querySelector(".overlay img").naturalWidth > 0);
  // The heat map under that model, toggled over the image without leaving the page.
  check("no heat map before the toggle", await page.getAttribute("#heat", "src"), null);
  await page.check("#toggle-heat");
  await page.waitForFunction(() => {
    const heat = document.getElementById("heat");
    return heat.complete && heat.naturalWidth > 0 && getComputedStyle(heat).visibility === "visible";
  });
  check("the heat map is the image's size", await page.evaluate(() => {
    const [part, heat] = document.querySelectorAll(".overlay img");
    return [heat.naturalWidth, heat.naturalHeight].join("x") === [part.naturalWidth, part.naturalHeight].join("x");
  }), true);
  check("on the same page", new URL(page.url()).pathname, `/results/${expect.ng_id}`);
  await shot("detail-heatmap");
  await page.uncheck("#toggle-heat");
  check("hidden again", await page.evaluate(() =>
    getComputedStyle(document.getElementById("heat")).visibility), "hidden");
  // A review: the NG verdict confirmed, with a comment, shown as the latest.
  await page.fill("#feedback input[name=comment]", "rivet missing, seen at the bench");
  await Promise.all([page.waitForURL(/#feedback$/), page.click("#feedback button[value=confirmed]")]);
  check("the review is shown", await page.getAttribute("#latest-feedback", "data-verdict"), "confirmed");
  await shot("detail");
  await page.setViewportSize({ width: 800, height: 1280 });
  await shot("detail-tablet");
  await page.setViewportSize({ width: 1280, height: 800 });

  // Bulk review: two OK parts confirmed and one marked incorrect (a false OK), from the list.
  await page.goto(`${url}/results?defect_detected=false`);
  const okIds = await page.locator("#results input[name=id]").evaluateAll((b) => b.map((x) => x.value));
  await page.check(`#results input[value="${okIds[0]}"]`);
  await page.check(`#results input[value="${okIds[1]}"]`);
  await Promise.all([page.waitForURL(/defect_detected=false/), page.click("#bulk button[value=confirmed]")]);
  await page.check(`#results input[value="${okIds[2]}"]`);
  await page.fill("#bulk input[name=comment]", "burr on the spine");
  await Promise.all([page.waitForURL(/defect_detected=false/), page.click("#bulk button[value=incorrect]")]);
  const reviews = await page.locator("#results td.review").evaluateAll((c) =>
    c.map((td) => [td.parentElement.dataset.id, td.dataset.feedback]));
  const reviewOf = Object.fromEntries(reviews);
  check("bulk reviews shown", [okIds[0], okIds[1], okIds[2]].map((id) => reviewOf[id]),
    ["confirmed", "confirmed", "false_ok"]);
  await shot("results-reviewed");

  // Capability: each SKU's counts are the API's; the false OK is listed.
  await page.click("nav a[href='/capability']");
  await page.selectOption("select[name=range]", "all");
  await Promise.all([page.waitForURL(/range=all/), page.click("form.filters button[type=submit]")]);
  const counts = async (row) => {
    const shownCounts = [];
    for (const k of ["tp", "fp", "tn", "fn"]) shownCounts.push(Number(await page.textContent(`${row} .${k}`)));
    return shownCounts;
  };
  const wanted = (c) => [c.true_positives, c.false_positives, c.true_negatives, c.false_negatives];
  for (const sku of Object.keys(expect.skus)) {
    const c = await api(`/api/v1/capability?sku=${sku}`);
    check(`${sku} capability`, await counts(`#capability tr[data-sku="${sku}"]:not([data-version])`), wanted(c));
    // And per model version that judged the reviewed parts (data-version empty for none).
    const versions = await api(`/api/v1/capability/versions?sku=${sku}`);
    check(`${sku} versions shown`, await page.locator(`#capability tr[data-sku="${sku}"][data-version]`)
      .evaluateAll((r) => r.map((x) => x.dataset.version)), versions.map((v) => v.model_version ?? ""));
    for (const v of versions) {
      check(`${sku} ${v.model_version} capability`,
        await counts(`#capability tr[data-sku="${sku}"][data-version="${v.model_version ?? ""}"]`), wanted(v));
    }
  }
  check("false OKs listed", await page.locator("#false-ok tbody tr[data-id]").evaluateAll((r) =>
    r.map((x) => x.dataset.id)), [okIds[2]]);
  await shot("capability");

  // Golden sets: the images of each SKU and its active model.
  await page.click("nav a[href='/golden']");
  for (const [sku, samples] of Object.entries(expect.skus)) {
    check(`${sku} golden images`, Number(await page.textContent(`tr[data-sku="${sku}"] .samples`)), samples);
    check(`${sku} model`, await page.textContent(`tr[data-sku="${sku}"] .version`), "v1");
  }
  await shot("golden");
  const [firstSku, firstCount] = Object.entries(expect.skus)[0];
  await page.click(`tr[data-sku="${firstSku}"] a`);
  check("golden images shown", await page.locator(".gallery img").count(), firstCount);
  await shot("golden-set");

  // Fleet: the device that sent the parts.
  await page.click("nav a[href='/fleet']");
  const devices = await page.locator("#devices tr[data-device]").evaluateAll((rows) =>
    rows.map((r) => r.dataset.device));
  check("devices", devices, expect.devices);
  await shot("fleet");

  // A form posted without its CSRF token is refused, with the session's cookie sent.
  const forged = await page.request.post(`${url}/signout`, { form: { csrf: "forged" } });
  check("a form without its token", forged.status(), 403);
  check("its code", (await forged.json()).error.code, "csrf_rejected");

  // Signing out ends the session.
  await Promise.all([page.waitForURL(`${url}/signin`), page.click("header form button")]);
  await page.goto(`${url}/fleet`);
  check("after signing out", new URL(page.url()).pathname, "/signin");

  // An admin marks an NG part a false NG and adds it to its SKU's golden set in one click:
  // a new model version, one more golden image.
  await page.fill("#key", process.env.WIKO_ADMIN_KEY);
  await Promise.all([page.waitForURL(`${url}/overview`), page.click("button[type=submit]")]);
  await page.goto(`${url}/results/${expect.false_ng_id}`);
  check("no golden button before the review", await page.locator("button.add-golden").count(), 0);
  await Promise.all([page.waitForURL(/#feedback$/), page.click("#feedback button[value=false_ng]")]);
  await Promise.all([
    page.waitForURL(`${url}/golden/${expect.false_ng_sku}`),
    page.click("button.add-golden"),
  ]);
  check("golden images after the add", Number(await page.textContent("#sample-count")),
    expect.skus[expect.false_ng_sku] + 1);
  check("the new model version", await page.textContent("#model .version"), "v2");
  await shot("golden-added");
  console.log("all checks passed");
} finally {
  await browser.close();
}
