// Drives the web console in a real headless Chromium (Debian's, through playwright-core), as a
// person would: a wrong key is refused; sign in; submit a task; watch it finish; open its detail;
// run it again with the same seed (same pixels); filter the gallery; watch a running card finish
// in the gallery; open a card with the keyboard and come back with Escape; a failed task and a
// JPEG one; the operator page; tasks waiting behind a long one with their place in the queue,
// cancelled (waiting, running) and deleted (after a confirmation, by keyboard), and the server's
// refusals shown; every page checked by axe-core and at 390 px wide; and the whole flow again from
// an origin that is not a secure context, where the page signs without WebCrypto.
// Prints one JSON object of findings; screenshots go to OUT_DIR.
//
//   node console_check.mjs URL SECRET_ID SECRET_KEY OUT_DIR

import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, secretId, secretKey, outDir] = process.argv.slice(2);
const port = new URL(url).port;
const axeSource = readFileSync(new URL("./node_modules/axe-core/axe.min.js", import.meta.url), "utf8");
const findings = { axe: {}, overflow: {} };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--host-resolver-rules=MAP console.test 127.0.0.1"],
});

async function signIn(page, secret) {
  await page.fill("#secret-id", secretId);
  await page.fill("#secret-key", secret);
  await page.click("#signin-form button[type=submit]");
}

async function create(page, prompt, fields = {}) {
  await page.goto(page.url().split("#")[0] + "#/create");
  await page.waitForFunction(() => document.querySelector("#model").options.length > 1); // models.json read
  await page.evaluate(() => {
    document.querySelector("#create-form").reset(); // a form of its own, not the last task's choices
    document.querySelector("#model").dispatchEvent(new Event("change"));
  });
  await page.fill("#prompt", prompt);
  for (const [selector, value] of Object.entries(fields)) {
    const tag = await page.$eval(selector, (element) => element.tagName);
    if (tag === "SELECT") await page.selectOption(selector, value);
    else await page.fill(selector, String(value));
  }
  await page.click("#create-form button[type=submit]");
  await page.waitForFunction(() => location.hash.startsWith("#/task/") || document.querySelector("#create-error").textContent);
  const refused = await page.textContent("#create-error");
  if (refused) throw new Error(`the console refused to create "${prompt}": ${refused}`);
  return page.url().split("#/task/")[1];
}

async function createAndWait(page, prompt, seed) {
  const taskId = await create(page, prompt, { "input[name=seed]": seed });
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

// axe-core's serious and critical findings on the page as it is now (run through the DevTools
// protocol: the page's Content-Security-Policy rightly refuses inline scripts).
async function audit(page, name) {
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => (await axe.run(document)).violations);
  findings.axe[name] = violations
    .filter((violation) => ["serious", "critical"].includes(violation.impact))
    .map((violation) => `${violation.id}: ${violation.nodes.map((node) => node.target.join(" ")).join(", ")}`);
}

// How far the page is wider than the window (0: nothing runs off the side).
async function overflow(page, name) {
  findings.overflow[name] = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}

// Every page, checked as it is: axe-core, horizontal overflow, a screenshot.
async function look(page, name, width) {
  await audit(page, `${name}@${width}`);
  await overflow(page, `${name}@${width}`);
  await page.screenshot({ path: `${outDir}/${name}-${width}.png`, fullPage: true });
}

// A state that passes (a task waiting or running), looked at on a desktop and on a phone at once.
async function looks(page, name) {
  await look(page, name, 1280);
  await page.setViewportSize({ width: 390, height: 844 });
  await look(page, name, 390);
  await page.setViewportSize({ width: 1280, height: 900 });
}

const cardOf = (taskId) => `.card[data-task-id="${taskId}"]`;
let page; // the main page, read back if a step fails

try {
  // 1. On 127.0.0.1 (a secure context: WebCrypto signs), in Tokyo's time zone: the console shows
  //    local times with the zone's name, not the API's unlabelled UTC+8.
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, timezoneId: "Asia/Tokyo" });
  page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${url}/console/`);
  await page.waitForSelector("body[data-ready=yes]");
  findings.crypto = await page.getAttribute("body", "data-crypto");
  findings.favicon = await page.getAttribute("link[rel=icon]", "href");

  await signIn(page, "not-the-key");
  await page.waitForFunction(() => document.querySelector("#signin-error").textContent.includes("AuthFailure"));
  findings.wrongKey = await page.textContent("#signin-error");
  await page.screenshot({ path: `${outDir}/signin-refused.png` });
  await look(page, "signin", 1280);

  await signIn(page, secretKey);
  await page.waitForSelector("#gallery:not([hidden])");
  findings.keyInStorage = await page.evaluate(() => JSON.stringify(localStorage).includes("secret"));

  const first = await createAndWait(page, "a lighthouse on a cliff at dusk", 42);
  await page.waitForFunction(() => document.querySelector("#task-label").textContent.includes("{"));
  findings.firstTask = first;
  findings.detail = await page.textContent("#task-details");
  findings.created = await page.textContent("#task-details tr:nth-child(7) td");
  findings.label = await page.textContent("#task-label");
  findings.download = await page.getAttribute("#task-images a", "download");
  const downloadUrl = await page.getAttribute("#task-images a", "href");
  findings.downloadStatus = (await page.request.get(new URL(downloadUrl, page.url()).href)).status();
  findings.rerunShown = await page.isVisible("#rerun");
  await page.screenshot({ path: `${outDir}/task.png`, fullPage: true });
  await look(page, "task", 1280);
  const firstPixels = await pixels(page);

  await page.click("#rerun");
  await page.waitForURL((target) => target.hash.startsWith("#/task/") && !target.hash.endsWith(first));
  findings.rerunTask = page.url().split("#/task/")[1];
  await finished(page, findings.rerunTask);
  findings.rerunSamePixels = JSON.stringify(await pixels(page)) === JSON.stringify(firstPixels);

  // The create form offers only what the chosen model accepts.
  await page.goto(`${url}/console/#/create`);
  await page.waitForFunction(() => document.querySelector("#model").options.length > 1);
  findings.models = await page.evaluate(async () => (await fetch("models.json")).json());
  findings.offered = await page.$$eval("#aspect-ratio option", (options) => options.map((option) => option.value).filter(Boolean));
  findings.offeredResolutions = await page.$$eval("#resolution option", (options) => options.map((option) => option.value).filter(Boolean));
  await look(page, "create", 1280);

  // A JPEG's label comes from its XMP packet, shown as the label, not as raw XML.
  const jpeg = await create(page, "a harbour in the rain", { "select[name=OutputFormat]": "jpeg", "#aspect-ratio": "16:9" });
  await finished(page, jpeg);
  await page.waitForFunction(() => document.querySelector("#task-label").textContent.includes("{"));
  findings.jpegLabel = await page.textContent("#task-label");
  findings.jpegLabelSource = await page.textContent("#task-label-source");

  // A task that fails: its reason shown, no "Run again".
  const failing = await create(page, "a model with no weights here", { "#model": "SD-Turbo:1.0" });
  await page.waitForFunction(() => document.querySelector("#task-status").classList.contains("FAILED"), null, { timeout: 120000 });
  findings.failedReason = await page.textContent("#task-failure");
  findings.failedRerunShown = await page.isVisible("#rerun");
  await look(page, "task-failed", 1280);

  await page.goto(`${url}/console/#/gallery`);
  await page.waitForSelector(".card");
  await page.selectOption("#gallery-filters select[name=status]", "FINISHED");
  await page.fill("#gallery-filters input[name=text]", "lighthouse");
  await page.click("#gallery-filters button");
  await page.waitForFunction(() => document.querySelectorAll(".card").length === 2);
  findings.galleryCards = await page.$$eval(".card", (cards) => cards.map((card) => card.dataset.taskId));
  await page.screenshot({ path: `${outDir}/gallery.png`, fullPage: true });

  // The gallery follows a running task to its end, without a reload; its card opens with the
  // keyboard, and Escape comes back to it.
  await page.selectOption("#gallery-filters select[name=status]", "");
  await page.fill("#gallery-filters input[name=text]", "");
  const slow = await create(page, "a slow one", { "#steps": 150, "input[name=size]": "256x256" });
  await page.goto(`${url}/console/#/gallery`);
  const card = `.card[data-task-id="${slow}"]`;
  await page.waitForSelector(card);
  findings.slowCardFirst = await page.getAttribute(card, "data-status");
  findings.slowCardNoBrokenImage = await page.$eval(card, (element) => !element.querySelector("img"));
  await page.waitForFunction(
    (selector) => {
      const image = document.querySelector(`${selector} img`);
      return document.querySelector(selector).dataset.status === "FINISHED" && image && image.complete && image.naturalWidth > 0;
    },
    card,
    { timeout: 120000 },
  );
  findings.slowCardLast = await page.getAttribute(card, "data-status");
  findings.failedCardReason = await page.textContent(`.card[data-task-id="${failing}"] .why`);
  await look(page, "gallery", 1280);
  await page.focus(`${card} a.open`);
  await page.keyboard.press("Enter");
  await page.waitForURL((target) => target.hash === `#/task/${slow}`);
  await finished(page, slow);
  await page.keyboard.press("Escape");
  const focusedCard = () => document.activeElement?.closest(".card")?.dataset.taskId;
  await page.waitForFunction((id) => document.activeElement?.closest(".card")?.dataset.taskId === id, slow);
  findings.keyboard = { opened: slow, focusedAfterEscape: await page.evaluate(focusedCard) };
  const tabbable = await page.evaluate(() => document.querySelector(".card a.open").tabIndex);
  findings.cardsTabbable = tabbable === 0;

  await page.goto(`${url}/console/#/operator`); // a worker reports a model the moment it has loaded it
  await page.waitForFunction(() => document.querySelectorAll("#operator-workers tbody tr").length >= 1 &&
    document.querySelector("#operator-failures tbody td[data-label]"));
  findings.operator = await page.textContent("#operator-workers");
  findings.operatorPage = await page.textContent("#operator");
  findings.failedMessage = findings.failedReason.replace(/^Why it failed: /, "");
  await page.screenshot({ path: `${outDir}/operator.png`, fullPage: true });
  await look(page, "operator", 1280);

  // Cancel, delete and the queue. A task of 999 steps at 512x512 keeps the one worker busy for
  // minutes on a CPU, until it is cancelled; two more wait behind it.
  const long = await create(page, "a long exposure of the sea", { "#steps": 999, "input[name=size]": "512x512" });
  await page.waitForSelector("#task-status.RUNNING", { timeout: 120000 });
  await page.waitForSelector("#cancel-task:not([hidden])");
  findings.running = { deleteShown: await page.isVisible("#delete-task"), rerunShown: await page.isVisible("#rerun") };
  await looks(page, "task-running");
  const next = await create(page, "a fox in the snow", { "#steps": 3 });
  const behind = await create(page, "a red kite over the hills", { "#steps": 4 });
  findings.queueTasks = { long, next, behind };
  await page.waitForFunction(() => document.querySelector("#task-message").textContent.includes("ahead"));
  findings.waiting = {
    message: await page.textContent("#task-message"),
    progressShown: await page.isVisible("#task-running"),
    cancelShown: await page.isVisible("#cancel-task"),
  };
  await looks(page, "task-waiting");
  await page.goto(`${url}/console/#/gallery`);
  await page.waitForFunction((ids) => ids.every((id) => document.querySelector(`.card[data-task-id="${id}"] .ahead`)), [next, behind]);
  findings.galleryPositions = [await page.textContent(`${cardOf(next)} .ahead`), await page.textContent(`${cardOf(behind)} .ahead`)];

  // A second person (another browser) looks at the first waiting task; their page stops reading it
  // again (its clock paused), as a page looked at just before the task finished would show it.
  const stale = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await stale.clock.install(); // real time until paused
  const watcher = await stale.newPage();
  watcher.on("pageerror", (error) => errors.push(String(error)));
  await watcher.goto(`${url}/console/`);
  await watcher.waitForSelector("body[data-ready=yes]");
  await signIn(watcher, secretKey);
  await watcher.waitForSelector("#gallery:not([hidden])");
  await watcher.goto(`${url}/console/#/task/${next}`);
  await watcher.waitForFunction((id) => document.querySelector("#task").dataset.taskId === id &&
    document.querySelector("#task-status").classList.contains("PENDING"), next);
  await stale.clock.pauseAt((await watcher.evaluate(() => Date.now())) + 100);

  // The last waiting task, cancelled by keyboard on its page: FAILED with the server's message.
  await page.goto(`${url}/console/#/task/${behind}`);
  await page.waitForSelector("#cancel-task:not([hidden])");
  await page.focus("#cancel-task");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#task-status.FAILED");
  findings.cancelledWaiting = {
    failure: await page.textContent("#task-failure"),
    focus: await page.evaluate(() => document.activeElement.id),
    cancelShown: await page.isVisible("#cancel-task"),
    deleteShown: await page.isVisible("#delete-task"),
  };
  await look(page, "task-cancelled", 1280);

  // The running one, cancelled from its gallery card: the worker drops it, and the next one runs.
  await page.goto(`${url}/console/#/gallery`);
  await page.waitForSelector(`${cardOf(long)} button[data-action=cancel]`);
  await page.click(`${cardOf(long)} button[data-action=cancel]`);
  await page.waitForFunction((selector) => document.querySelector(selector).dataset.status === "FAILED", cardOf(long));
  findings.galleryCancel = {
    notice: await page.textContent("#gallery-notice"),
    why: await page.textContent(`${cardOf(long)} .why`),
    button: await page.textContent(`${cardOf(long)} button`),
  };
  await page.goto(`${url}/console/#/task/${next}`);
  await finished(page, next);

  // The paused page still offers to cancel it: the server refuses, the page says so and shows it finished.
  await watcher.click("#cancel-task");
  await watcher.waitForFunction(() => document.querySelector("#task-error").textContent);
  findings.cancelRefused = {
    error: await watcher.textContent("#task-error"),
    status: await watcher.textContent("#task-status"),
    deleteShown: await watcher.isVisible("#delete-task"),
  };
  await watcher.screenshot({ path: `${outDir}/task-cancel-refused-1280.png`, fullPage: true });
  await stale.clock.resume();

  // Delete, by keyboard: Delete asks first, "Keep it" has the focus, Escape keeps the task (and stays
  // on its page); then Tab to Delete, Enter: back in the gallery, which no longer shows it.
  await page.focus("#delete-task");
  await page.keyboard.press("Enter");
  await page.waitForSelector("#confirm-delete[open]");
  findings.confirm = { focus: await page.evaluate(() => document.activeElement.textContent) };
  await looks(page, "task-confirm");
  await page.keyboard.press("Escape");
  await page.waitForFunction(() => !document.querySelector("#confirm-delete").open);
  findings.confirm.afterEscape = await page.evaluate(() => ({ hash: location.hash, focus: document.activeElement.id }));
  await page.keyboard.press("Enter");
  await page.waitForSelector("#confirm-delete[open]");
  await page.keyboard.press("Tab");
  findings.confirm.tabbedTo = await page.evaluate(() => document.activeElement.textContent);
  await page.keyboard.press("Enter");
  await page.waitForURL((target) => target.hash === "#/gallery");
  await page.waitForFunction((selector) => !document.querySelector(selector) && document.querySelector(".card"), cardOf(next));
  findings.deleted = { notice: await page.textContent("#gallery-notice") };
  await page.goto(`${url}/console/#/task/${next}`);
  await page.waitForFunction(() => document.querySelector("#task-error").textContent);
  findings.deleted.reopened = await page.textContent("#task-error");

  // The cancelled running task, open on the other page, deleted here from its card (confirmed with
  // the mouse); the other page's Delete is then refused, and it says why.
  await watcher.goto(`${url}/console/#/task/${long}`);
  await watcher.waitForSelector("#delete-task:not([hidden])");
  await page.goto(`${url}/console/#/gallery`);
  await page.click(`${cardOf(long)} button[data-action=delete]`);
  await page.waitForSelector("#confirm-delete[open]");
  await page.click("#confirm-delete-yes");
  await page.waitForFunction((selector) => !document.querySelector(selector), cardOf(long));
  findings.galleryDelete = {
    notice: await page.textContent("#gallery-notice"),
    focus: await page.evaluate(() => document.activeElement.closest(".card")?.dataset.taskId || document.activeElement.tagName),
  };
  await watcher.click("#delete-task");
  await watcher.waitForSelector("#confirm-delete[open]");
  await watcher.click("#confirm-delete-yes");
  await watcher.waitForFunction(() => document.querySelector("#task-error").textContent);
  findings.deleteRefused = { error: await watcher.textContent("#task-error"), hash: new URL(watcher.url()).hash };
  await watcher.screenshot({ path: `${outDir}/task-delete-refused-1280.png`, fullPage: true });
  await stale.close();

  // 390 × 844, a phone: every page fits its width and passes axe-core there too.
  await page.setViewportSize({ width: 390, height: 844 });
  for (const [name, hash] of [["gallery", "#/gallery"], ["create", "#/create"], ["task", `#/task/${first}`],
    ["task-failed", `#/task/${failing}`], ["task-cancelled", `#/task/${behind}`], ["operator", "#/operator"]]) {
    await page.goto(`${url}/console/${hash}`);
    await page.waitForSelector(`#${name.split("-")[0]}:not([hidden])`);
    await page.waitForLoadState("networkidle");
    await look(page, name, 390);
  }
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 } });
  await phone.goto(`${url}/console/`);
  await phone.waitForSelector("body[data-ready=yes]");
  await look(phone, "signin", 390);
  await phone.close();
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
  // What the page showed when a step timed out: its place, its error line and notice, the focus.
  const shown = await page?.evaluate(() => ({
    hash: location.hash,
    taskError: document.querySelector("#task-error")?.textContent,
    notice: document.querySelector("#gallery-notice")?.textContent,
    focus: document.activeElement?.id || document.activeElement?.textContent,
    dialogOpen: document.querySelector("#confirm-delete")?.open,
  })).catch((reason) => String(reason));
  findings.error = `${error.stack || error}\npage: ${JSON.stringify(shown)}`;
} finally {
  await browser.close();
}
console.log(JSON.stringify(findings));
