// The console: sign in with a key, create tasks with every CreateAigcImageTask parameter, watch
// them run, browse and filter the key's tasks, open one, run it again, download its images, and a
// read-only operator page. Every call is a signed call of the public API (tc3.js).

import { signedHeaders, usesWebCrypto } from "./tc3.js";

const API = new URL("../", location.href); // the API's root, also behind a reverse proxy's path prefix
const VERSION = "2019-06-12";
const STORED_KEY = "aigc-image.console.key";
const $ = (id) => document.getElementById(id);
const state = { key: null, clockOffset: 0, pollTimer: null, page: 1, tasks: [] };

class ApiError extends Error {
  constructor(code, message, requestId) {
    super(`${code}: ${message}`);
    this.code = code;
    this.requestId = requestId;
  }
}

// -- the API ------------------------------------------------------------------------------------

async function call(action, params = {}, retried = false) {
  const body = JSON.stringify(params);
  const timestamp = Math.floor(Date.now() / 1000) + state.clockOffset;
  const headers = await signedHeaders({
    secretId: state.key.id, secretKey: state.key.secret, action, body, host: location.host, timestamp, version: VERSION,
  });
  const response = await fetch(API, { method: "POST", headers, body, cache: "no-store" });
  const reply = (await response.json()).Response;
  if (reply.Error) {
    const date = Date.parse(response.headers.get("Date") || "");
    if (reply.Error.Code === "AuthFailure.SignatureExpire" && !retried && !Number.isNaN(date)) {
      state.clockOffset = Math.round((date - Date.now()) / 1000); // this computer's clock is off: use the server's
      return call(action, params, true);
    }
    throw new ApiError(reply.Error.Code, reply.Error.Message, reply.RequestId);
  }
  return reply;
}

// -- signing in ---------------------------------------------------------------------------------

async function signIn(id, secret, remember) {
  state.key = { id, secret };
  try {
    await call("DescribeAigcTaskList", { PageNum: 1, PageSize: 1 });
  } catch (error) {
    state.key = null;
    throw error;
  }
  if (remember) localStorage.setItem(STORED_KEY, JSON.stringify(state.key));
  $("who-id").textContent = id;
  $("who").hidden = $("nav").hidden = false;
}

function signOut() {
  state.key = null;
  localStorage.removeItem(STORED_KEY);
  $("who").hidden = $("nav").hidden = true;
  location.hash = "#/signin";
}

$("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  $("signin-error").textContent = "";
  try {
    await signIn(form.secretId.value.trim(), form.secretKey.value, form.remember.checked);
    form.secretKey.value = "";
    location.hash = "#/gallery";
  } catch (error) {
    $("signin-error").textContent = error instanceof ApiError ? `Refused: ${error.message}` : `${error}`;
  }
});
$("sign-out").addEventListener("click", signOut);

// -- creating a task ----------------------------------------------------------------------------

function createParams(form) {
  const value = (name) => form.elements[name].value.trim();
  const params = { OutputImageCount: Number(value("OutputImageCount") || 1) };
  for (const name of ["Prompt", "NegativePrompt", "ModelName", "ModelVersion", "SceneType", "Operator"]) {
    if (value(name)) params[name] = value(name);
  }
  if (form.elements.EnhancePrompt.checked) params.EnhancePrompt = true;
  const extra = { OutputFormat: value("OutputFormat"), LogoAdd: form.elements.LogoAdd.checked ? 1 : 0 };
  if (value("AspectRatio")) extra.AspectRatio = value("AspectRatio");
  if (value("Resolution")) extra.Resolution = value("Resolution");
  params.ExtraParameters = extra;
  const additional = {};
  for (const name of ["seed", "steps"]) if (value(name)) additional[name] = Number.parseInt(value(name), 10);
  for (const name of ["guidance_scale", "strength"]) if (value(name)) additional[name] = Number(value(name));
  if (value("size")) additional.size = value("size");
  if (Object.keys(additional).length) params.AdditionalParameters = JSON.stringify(additional);
  const urls = value("ImageUrls").split(/\s+/).filter(Boolean);
  if (urls.length) params.ImageInfos = urls.map((url) => ({ ImageUrl: url }));
  if (value("CosBucketName") || value("CosBucketRegion")) {
    params.StoreCosParam = {
      CosBucketName: value("CosBucketName"), CosBucketRegion: value("CosBucketRegion"), CosBucketPath: value("CosBucketPath"),
    };
  }
  return params;
}

async function createTask(params, errorBox) {
  errorBox.textContent = "";
  try {
    const { TaskId } = await call("CreateAigcImageTask", params);
    location.hash = `#/task/${TaskId}`;
  } catch (error) {
    errorBox.textContent = `${error.message}`;
  }
}

$("create-form").addEventListener("submit", (event) => {
  event.preventDefault();
  createTask(createParams(event.target), $("create-error"));
});

// -- one task -----------------------------------------------------------------------------------

function row(table, name, value) {
  const tr = table.insertRow();
  const th = document.createElement("th");
  th.textContent = name;
  tr.append(th);
  tr.insertCell().textContent = value ?? "";
}

// Empties the task page, so that a task just opened never shows the last one's status or images.
function clearTask(taskId) {
  $("task").dataset.taskId = taskId;
  $("task").dataset.request = "{}";
  $("task-id").textContent = taskId;
  $("task-status").textContent = "…";
  $("task-status").className = "status";
  $("task-message").textContent = "";
  $("task-progress").value = 0;
  $("task-steps").textContent = "";
  $("task-images").replaceChildren();
  $("task-details").replaceChildren();
  $("task-label").textContent = "(read from the first image once it is done)";
}

async function showTask(taskId) {
  clearTimeout(state.pollTimer);
  if ($("task").dataset.taskId !== taskId) clearTask(taskId);
  $("task-error").textContent = "";
  let task;
  try {
    task = await call("DescribeAigcTaskStatus", { TaskId: taskId });
  } catch (error) {
    $("task-error").textContent = error.message;
    return;
  }
  if (location.hash !== `#/task/${taskId}`) return; // the person moved on meanwhile
  const info = JSON.parse(task.TaskInfo || "{}");
  $("task-status").textContent = task.TaskStatus;
  $("task-status").className = `status ${task.TaskStatus}`;
  $("task-message").textContent = task.TaskResultMsg || "";
  $("task-progress").value = info.progress || 0;
  $("task-steps").textContent = info.steps ? `step ${info.step} of ${info.steps}` : "";
  const body = JSON.parse(task.RequestBody || "{}");
  const additional = JSON.parse(body.AdditionalParameters || "{}");
  const details = $("task-details");
  details.replaceChildren();
  row(details, "Model", `${body.ModelName}:${body.ModelVersion}`);
  row(details, "Prompt", body.EnhancedPrompt ? `${body.Prompt}  →  ${body.EnhancedPrompt}` : body.Prompt);
  row(details, "Negative prompt", body.NegativePrompt);
  row(details, "Seed", additional.seed);
  row(details, "Size", additional.size);
  row(details, "Steps, guidance", `${additional.steps}, ${additional.guidance_scale ?? "model default"}`);
  row(details, "Created", task.CreateTime);
  row(details, "Started", task.ScheduledTime);
  row(details, "Finished", task.FinishedTime);
  row(details, "Request", task.RequestBody);
  $("task").dataset.request = task.RequestBody || "{}";
  if (task.TaskStatus === "FINISHED") {
    const { Urls } = (await call("DescribeAigcTaskList", { QueryTaskFilter: { TaskId: taskId } })).Tasks[0] || {};
    showImages(Urls || [], body.ExtraParameters?.OutputFormat || "png", taskId);
  } else {
    $("task-images").replaceChildren();
  }
  if (task.TaskStatus === "PENDING" || task.TaskStatus === "RUNNING") {
    state.pollTimer = setTimeout(() => showTask(taskId), 700);
  }
}

function showImages(urls, format, taskId) {
  const figures = urls.map((url, index) => {
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.src = url;
    image.alt = `image ${index + 1} of task ${taskId}`;
    const link = document.createElement("a");
    link.href = url;
    link.download = `${taskId}-${index}.${format === "jpeg" ? "jpg" : format}`;
    link.textContent = "Download";
    const caption = document.createElement("figcaption");
    caption.append(link);
    figure.append(image, caption);
    return figure;
  });
  $("task-images").replaceChildren(...figures);
  if (!urls.length) return;
  readLabel(urls[0]).then((label) => {
    if ($("task").dataset.taskId === taskId) $("task-label").textContent = label;
  });
}

// The implicit AIGC label the image carries: PNG iTXt "AIGC", or the XMP packet of a JPEG.
async function readLabel(url) {
  const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
  if (bytes[0] === 0x89 && bytes[1] === 0x50) {
    const view = new DataView(bytes.buffer);
    for (let offset = 8; offset + 8 <= bytes.length; ) {
      const length = view.getUint32(offset);
      const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
      const data = bytes.subarray(offset + 8, offset + 8 + length);
      if (type === "iTXt") {
        const keyword = new TextDecoder().decode(data.subarray(0, data.indexOf(0)));
        if (keyword === "AIGC") {
          let start = data.indexOf(0) + 3; // keyword NUL, compression flag and method
          start = data.indexOf(0, start) + 1; // language tag
          start = data.indexOf(0, start) + 1; // translated keyword
          const text = new TextDecoder().decode(data.subarray(start));
          return JSON.stringify(JSON.parse(text), null, 2);
        }
      }
      offset += 12 + length;
    }
    return "(no AIGC label in this image)";
  }
  const text = new TextDecoder("latin1").decode(bytes.subarray(0, 65536));
  const xmp = text.match(/<x:xmpmeta[\s\S]*?<\/x:xmpmeta>/);
  return xmp ? xmp[0] : "(no AIGC label in this image)";
}

$("rerun").addEventListener("click", () => {
  const body = JSON.parse($("task").dataset.request || "{}");
  const params = {};
  for (const name of ["ModelName", "ModelVersion", "Prompt", "NegativePrompt", "OutputImageCount", "SceneType", "Operator"]) {
    if (body[name]) params[name] = body[name];
  }
  if (body.EnhancePrompt) params.EnhancePrompt = true;
  const extra = { ...(body.ExtraParameters || {}) };
  for (const name of ["AspectRatio", "Resolution"]) if (!extra[name]) delete extra[name];
  params.ExtraParameters = extra;
  const additional = JSON.parse(body.AdditionalParameters || "{}");
  if (extra.AspectRatio || extra.Resolution) delete additional.size; // the same size, chosen the same way
  if (additional.guidance_scale === null) delete additional.guidance_scale;
  params.AdditionalParameters = JSON.stringify(additional);
  if (body.ImageInfos) {
    if (body.ImageInfos.some((info) => info.ImageUrl.startsWith("data:"))) {
      $("task-error").textContent = "This task's reference images were uploaded with it; upload them again to rerun it.";
      return;
    }
    params.ImageInfos = body.ImageInfos;
  }
  if (body.StoreCosParam) params.StoreCosParam = body.StoreCosParam;
  createTask(params, $("task-error"));
});

// -- the gallery --------------------------------------------------------------------------------

async function showGallery(more = false) {
  const filters = $("gallery-filters").elements;
  state.page = more ? state.page + 1 : 1;
  const params = { PageNum: state.page, PageSize: 24 };
  if (filters.status.value) params.QueryTaskFilter = { TaskStatus: filters.status.value };
  const reply = await call("DescribeAigcTaskList", params);
  state.tasks = more ? state.tasks.concat(reply.Tasks) : reply.Tasks;
  const model = filters.model.value.trim().toLowerCase();
  const text = filters.text.value.trim().toLowerCase();
  const shown = state.tasks.filter((task) => {
    const body = JSON.parse(task.RequestBody || "{}");
    const label = `${body.ModelName}:${body.ModelVersion}`.toLowerCase();
    return (!model || label.includes(model)) && (!text || (body.Prompt || "").toLowerCase().includes(text));
  });
  $("gallery-cards").replaceChildren(...shown.map(card));
  $("gallery-count").textContent = `${shown.length} shown of ${reply.Total}`;
  $("gallery-more").hidden = state.page * 24 >= reply.Total;
}

function card(task) {
  const body = JSON.parse(task.RequestBody || "{}");
  const element = document.createElement("div");
  element.className = "card";
  element.dataset.taskId = task.TaskId;
  const image = document.createElement("img");
  if (task.Urls && task.Urls.length) image.src = task.Urls[0];
  image.alt = body.Prompt || task.TaskId;
  const prompt = document.createElement("div");
  prompt.className = "prompt";
  prompt.textContent = body.Prompt || "(no prompt)";
  const status = document.createElement("span");
  status.className = `status ${task.TaskStatus}`;
  status.textContent = task.TaskStatus;
  const when = document.createElement("small");
  when.textContent = ` ${task.CreateTime}`;
  element.append(image, prompt, status, when);
  element.addEventListener("click", () => (location.hash = `#/task/${task.TaskId}`));
  return element;
}

$("gallery-filters").addEventListener("submit", (event) => {
  event.preventDefault();
  showGallery();
});
$("gallery-more").addEventListener("click", () => showGallery(true));

// -- the operator page --------------------------------------------------------------------------

async function showOperator() {
  const response = await fetch(new URL("readyz", API), { cache: "no-store" });
  const view = await response.json();
  $("operator-ready").textContent = view.ready ? "Ready: tasks can run." : "Not ready: tasks wait.";
  const queue = $("operator-queue");
  queue.replaceChildren();
  row(queue, "Waiting", view.queue?.waiting);
  row(queue, "Running", view.queue?.running);
  const workers = $("operator-workers");
  workers.replaceChildren();
  const head = workers.insertRow();
  for (const name of ["Worker", "Device", "State", "Loaded models", "Failed to load", "Running", "Seen"]) {
    const th = document.createElement("th");
    th.textContent = name;
    head.append(th);
  }
  for (const worker of view.workers || []) {
    const tr = workers.insertRow();
    const failed = Object.entries(worker.failed || {}).map(([model, why]) => `${model}: ${why}`);
    for (const value of [worker.id, worker.device, worker.state, worker.loaded.join(", ") || "none",
      failed.join("; ") || "none", worker.running.length, `${worker.seen_seconds_ago} s ago`]) {
      tr.insertCell().textContent = value;
    }
  }
  const problems = view.problems?.length ? view.problems : ["none"];
  $("operator-problems").replaceChildren(...problems.map((problem) => {
    const item = document.createElement("li");
    item.textContent = problem;
    return item;
  }));
  const failures = $("operator-failures");
  failures.replaceChildren();
  const reply = await call("DescribeAigcTaskList", { PageSize: 10, QueryTaskFilter: { TaskStatus: "FAILED" } });
  for (const task of reply.Tasks) {
    const tr = failures.insertRow();
    const link = document.createElement("a");
    link.href = `#/task/${task.TaskId}`;
    link.textContent = task.TaskId;
    tr.insertCell().append(link);
    tr.insertCell().textContent = task.FinishedTime;
    tr.insertCell().textContent = task.TaskResultMsg;
  }
  if (!reply.Tasks.length) failures.insertRow().insertCell().textContent = "none";
}

$("operator-refresh").addEventListener("click", showOperator);

// -- pages --------------------------------------------------------------------------------------

async function route() {
  clearTimeout(state.pollTimer);
  const [, page = "gallery", arg] = location.hash.split("/");
  const name = state.key ? page : "signin";
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== name;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("current", link.hash === `#/${name}`);
  try {
    if (name === "task") await showTask(arg);
    if (name === "gallery") await showGallery();
    if (name === "operator") await showOperator();
    if (name === "create") await loadModelNames();
  } catch (error) {
    console.error(error);
  }
}

async function loadModelNames() {
  const view = await (await fetch(new URL("readyz", API), { cache: "no-store" })).json();
  const names = new Set((view.workers || []).flatMap((worker) => worker.loaded.map((label) => label.split(":")[0])));
  $("model-names").replaceChildren(...[...names].map((name) => Object.assign(document.createElement("option"), { value: name })));
}

async function start() {
  document.body.dataset.crypto = usesWebCrypto ? "webcrypto" : "fallback";
  const stored = localStorage.getItem(STORED_KEY);
  if (stored) {
    try {
      const { id, secret } = JSON.parse(stored);
      await signIn(id, secret, true);
    } catch {
      localStorage.removeItem(STORED_KEY);
    }
  }
  window.addEventListener("hashchange", route);
  await route();
  document.body.dataset.ready = "yes";
}

start();
