// End-to-end run of the page of `ddim-edit serve` in headless Chromium (playwright-core):
//   node page.mjs URL PHOTO OUTDIR
// Uploads PHOTO, types the toy prompts, runs an edit and watches its progress, downloads the
// result, runs a second edit of the same photo with the layout held, cancels a long one, and
// tries a non-image and an oversize upload. Writes OUTDIR/page.png and page-2.png (the two
// edits' downloads), OUTDIR/screenshot.png and prints a JSON report on stdout; the Rust test
// `serve_page` checks it against the CLI.
import { chromium } from "playwright-core";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, photo, out] = process.argv.slice(2);
const report = { progress: [], errors: {} };
// A fresh profile, and no background traffic: this machine's network is closed.
const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "ddim-edit-e2e-")), {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1200, height: 820 },
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
});
try {
  const page = browser.pages()[0] ?? await browser.newPage();
  page.on("pageerror", (e) => { report.pageErrors = [...(report.pageErrors ?? []), String(e)]; });
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("model").textContent !== "");
  await page.setInputFiles("#file", photo);
  await page.waitForSelector("#run:not([disabled])");
  await page.fill("#prompt", "an orange triangle on a textured background");
  await page.fill("#edit-prompt", "a blue triangle on a textured background");
  await page.click("summary");
  await page.fill("#steps", "10");
  const setStart = (v) => page.$eval("#start-step", (el, v) => {
    el.value = String(v);
    el.dispatchEvent(new Event("input"));
  }, v);
  await setStart(3);

  // The first edit: watch the progress text move until the result shows.
  const edits = () => page.$$eval("#history li", (items) => items.length);
  const run = async () => {
    const before = await edits();
    const started = Date.now();
    await page.click("#run");
    const seen = [];
    for (;;) {
      const text = await page.textContent("#progress-text");
      if (text && seen[seen.length - 1] !== text) seen.push(text);
      if (await edits() > before) break;
      if (await page.isVisible("#error")) throw new Error(await page.textContent("#error"));
      if (Date.now() - started > 120000) throw new Error(`no result after 120 s: ${seen}`);
      await page.waitForTimeout(5);
    }
    const text = await page.textContent("#progress-text");
    if (seen[seen.length - 1] !== text) seen.push(text);
    return { ms: Date.now() - started, seen };
  };
  const first = await run();
  report.first = first;
  const download = async (name) => {
    const href = await page.getAttribute("#download", "href");
    const bytes = await page.evaluate(async (h) => Array.from(new Uint8Array(await (await fetch(h)).arrayBuffer())), href);
    writeFileSync(join(out, name), Buffer.from(bytes));
  };
  await download("page.png");
  report.firstReuse = await page.textContent("#reuse");
  report.command = await page.textContent("#command");
  await page.screenshot({ path: join(out, "screenshot.png"), fullPage: true });

  // A second edit of the same photo reuses its inversion.
  // …with the layout held: feature injection and the blend from the branches' difference.
  await page.fill("#edit-prompt", "a green triangle on a textured background");
  await page.fill("#feature-replace", "0.8");
  await page.check("#blend-auto");
  report.second = await run();
  report.secondReuse = await page.textContent("#reuse");
  report.secondCommand = await page.textContent("#command");
  await download("page-2.png");
  report.history = await page.$$eval("#history li", (items) => items.length);

  // A long edit, cancelled once it runs.
  await page.fill("#steps", "999");
  await setStart(0);
  await page.click("#run");
  await page.waitForFunction(() => /inversion|sampling/.test(document.getElementById("progress-text").textContent));
  await page.click("#cancel");
  await page.waitForFunction(() => document.getElementById("progress-text").textContent === "cancelled", null, { timeout: 30000 });
  report.cancelled = await page.textContent("#progress-text");

  // Bad uploads: the page shows the server's error.
  const uploadError = async (file) => {
    await page.setInputFiles("#file", file);
    await page.waitForSelector("#error:not([hidden])");
    const text = await page.textContent("#error");
    await page.evaluate(() => { document.getElementById("error").hidden = true; });
    return text;
  };
  report.errors.text = await uploadError({ name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("not a photo") });
  report.errors.oversize = await uploadError({ name: "huge.png", mimeType: "image/png", buffer: Buffer.alloc(17 << 20) });
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + "\n");
