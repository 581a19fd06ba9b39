// Drives the web console in a real headless Chromium (Debian's, through playwright-core), as a
// person would: a wrong key is refused; sign in; submit a task; watch it finish; open its detail;
// run it again with the same seed (same pixels); filter the gallery; the operator page; and the
// whole flow again from an origin that is not a secure context, where the page signs without
// WebCrypto. Prints one JSON object of findings; screenshots go to OUT_DIR.
//
//   node console_check.mjs URL SECRET_ID SECRET_KEY OUT_DIR

import { chromium } from "playwright-core";

const [url, secretId, secretKey, outDir] = process.argv.slice(2);
const port = new URL(url).port;
const findings = {};
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--host-resolver-rules=MAP console.test 127.0.0.1"],
});

async function signIn(page, secret) {
  await page.fill("#secret-id", secretId);
  await page.fill("#secret-key", secret);
  await page.click("#signin-form button[type=submit]");
}

async function createAndWait(page, prompt, seed) {
  await page.goto(page.url().split("#")[0] + "#/create");
  await page.fill("#prompt", prompt);
  await page.fill("input[name=seed]", String(seed));
  await page.click("#create-form button[type=submit]");
  await page.waitForURL(/#\/task\//);
  const taskId = page.url().split("#/task/")[1];
  await finished(page, taskId);
  return taskId;
}

// Waits until the page shows this task (not the one it showed before) finished, its first image loaded.
async function finished(page, taskId) {
  await page.waitForFunction(
    (id) => {
      const shown = document.querySelector("#task").dataset.taskId === id;
      const done = document.querySelector("#task-status").classList.contains("FINISHED");
      const image = document.querySelector("#task-images img");
      return shown && done && image && image.complete && image.naturalWidth > 0;
    },
    taskId,
    { timeout: 120000 },
  );
}

// The pixels of the first image shown, drawn on a canvas.
async function pixels(page) {
  return page.evaluate(() => {
    const image = document.querySelector("#task-images img");
    const canvas = document.createElement("canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data);
  });
}

try {
  // 1. On 127.0.0.1 (a secure context: WebCrypto signs).
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${url}/console/`);
  await page.waitForSelector("body[data-ready=yes]");
  findings.crypto = await page.getAttribute("body", "data-crypto");

  await signIn(page, "not-the-key");
  await page.waitForFunction(() => document.querySelector("#signin-error").textContent.includes("AuthFailure"));
  findings.wrongKey = await page.textContent("#signin-error");
  await page.screenshot({ path: `${outDir}/signin-refused.png` });

  await signIn(page, secretKey);
  await page.waitForSelector("#gallery:not([hidden])");
  findings.keyInStorage = await page.evaluate(() => JSON.stringify(localStorage).includes("secret"));

  const first = await createAndWait(page, "a lighthouse on a cliff at dusk", 42);
  await page.waitForFunction(() => document.querySelector("#task-label").textContent.includes("{"));
  findings.firstTask = first;
  findings.detail = await page.textContent("#task-details");
  findings.label = await page.textContent("#task-label");
  findings.download = await page.getAttribute("#task-images a", "download");
  const downloadUrl = await page.getAttribute("#task-images a", "href");
  findings.downloadStatus = (await page.request.get(new URL(downloadUrl, page.url()).href)).status();
  await page.screenshot({ path: `${outDir}/task.png`, fullPage: true });
  const firstPixels = await pixels(page);

  await page.click("#rerun");
  await page.waitForURL((target) => target.hash.startsWith("#/task/") && !target.hash.endsWith(first));
  findings.rerunTask = page.url().split("#/task/")[1];
  await finished(page, findings.rerunTask);
  findings.rerunSamePixels = JSON.stringify(await pixels(page)) === JSON.stringify(firstPixels);

  await page.goto(`${url}/console/#/gallery`);
  await page.waitForSelector(".card");
  await page.selectOption("#gallery-filters select[name=status]", "FINISHED");
  await page.fill("#gallery-filters input[name=text]", "lighthouse");
  await page.click("#gallery-filters button");
  await page.waitForFunction(() => document.querySelectorAll(".card").length >= 2);
  findings.galleryCards = await page.$$eval(".card", (cards) => cards.map((card) => card.dataset.taskId));
  await page.screenshot({ path: `${outDir}/gallery.png`, fullPage: true });

  await page.goto(`${url}/console/#/operator`); // a worker reports a model the moment it has loaded it
  await page.waitForFunction(() => document.querySelectorAll("#operator-workers tr").length >= 2);
  findings.operator = await page.textContent("#operator-workers");
  await page.screenshot({ path: `${outDir}/operator.png`, fullPage: true });
  findings.pageErrors = errors;

  // 2. On http://console.test:PORT, not a secure context: the page signs without WebCrypto.
  const plain = await browser.newPage();
  await plain.goto(`http://console.test:${port}/console/`);
  await plain.waitForSelector("body[data-ready=yes]");
  findings.plainCrypto = await plain.getAttribute("body", "data-crypto");
  await signIn(plain, secretKey);
  await plain.waitForSelector("#gallery:not([hidden])");
  findings.plainTask = await createAndWait(plain, "a harbour at night", 7);
} catch (error) {
  findings.error = String(error.stack || error);
} finally {
  await browser.close();
}
console.log(JSON.stringify(findings));
