// The console: sign in with a key, create tasks with every CreateAigcImageTask parameter, watch
// them wait (how many tasks are ahead) and run, browse and filter the key's tasks, open one, run it
// again, download its images, cancel or delete it, and a read-only operator page. Every call is a
// signed call of the public API (tc3.js); the models the create form offers come from models.json
// (the catalogue, and the deployment's default model).

import { signedHeaders, usesWebCrypto } from "./tc3.js";

const API = new URL("../", location.href); // the API's root, also behind a reverse proxy's path prefix
const VERSION = "2019-06-12";
const STORED_KEY = "aigc-image.console.key";
const TASK_POLL_MS = 700;
const GALLERY_REFRESH_MS = 2000; // while a task shown in the gallery is waiting or running
const PAGE_SIZE = 24;
// Queue positions the gallery asks for per refresh (one DescribeAigcTaskStatus each): a few, so the
// console never spends much of the key's rate limit (api.rate_limit is per key and action).
const GALLERY_POSITIONS = 6;
const UNFINISHED = new Set(["PENDING", "RUNNING"]);
const $ = (id) => document.getElementById(id);
const state = {
  key: null, clockOffset: 0, pollTimer: null, galleryTimer: null, page: 1, tasks: [], models: null, returnTo: null, notice: "",
};

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

// A cancel or a delete: "" when done, else what the server said (its Code and message).
async function attempt(action, taskId) {
  try {
    await call(action, { TaskId: taskId });
    return "";
  } catch (error) {
    return error instanceof ApiError ? `Refused: ${error.message}` : `Failed: ${error}`;
  }
}

// A waiting task's place in the queue (TaskInfo's tasks_ahead, by the server's fair order).
function queuePosition(info) {
  if (info.tasks_ahead === undefined) return "";
  return info.tasks_ahead === 0 ? "next in line" : `${info.tasks_ahead} task${info.tasks_ahead === 1 ? "" : "s"} ahead`;
}

// The API writes times in UTC+8 (as MPS does); people read them in their own time zone, named.
const TIME_FORMAT = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
  timeZoneName: "short",
});

function localTime(apiTime) {
  if (!apiTime) return "";
  const moment = new Date(`${apiTime.replace(" ", "T")}+08:00`);
  return Number.isNaN(moment.getTime()) ? `${apiTime} UTC+8` : TIME_FORMAT.format(moment);
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
  $("who-id").title = id;
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

async function loadModels() {
  const response = await fetch(new URL("models.json", location.href), { cache: "no-store" });
  state.models = await response.json();
  const select = $("model");
  const chosen = select.value;
  const fallback = state.models.default ? `server default (${state.models.default})` : "server default (none yet: choose one)";
  const options = [Object.assign(document.createElement("option"), { value: "", textContent: fallback })];
  for (const model of state.models.models) {
    options.push(Object.assign(document.createElement("option"), { value: model.label, textContent: model.label }));
  }
  select.replaceChildren(...options);
  select.value = state.models.models.some((model) => model.label === chosen) ? chosen : "";
  offerWhatTheModelAccepts();
}

// The model a request with this form's choice gets: the one chosen, or the deployment's default.
function chosenModel() {
  if (!state.models) return null;
  const label = $("model").value || state.models.default;
  return state.models.models.find((model) => model.label === label) || null;
}

// Only what the chosen model accepts is offered: aspect ratios, resolutions, counts, scenes, references.
function offerWhatTheModelAccepts() {
  const model = chosenModel();
  const choices = (select, values) => {
    const kept = select.value;
    const options = [Object.assign(document.createElement("option"), { value: "", textContent: "model default" })];
    for (const value of values) options.push(Object.assign(document.createElement("option"), { value, textContent: value }));
    select.replaceChildren(...options);
    select.value = values.includes(kept) ? kept : "";
  };
  choices($("aspect-ratio"), model ? model.aspect_ratios : []);
  choices($("resolution"), model ? model.resolutions : []);
  const count = $("create-form").elements.OutputImageCount;
  count.max = model ? model.max_output_images : 16;
  $("steps").max = model ? model.max_steps : "";
  $("steps").placeholder = model ? `model default (${model.steps})` : "model default";
  const panorama = $("scene").querySelector("option[value='3d_panorama']");
  panorama.disabled = Boolean(model) && !model.panorama;
  if (panorama.disabled && $("scene").value) $("scene").value = "";
  const references = model ? model.max_reference_images : 0;
  $("references").disabled = Boolean(model) && references === 0;
  $("references-about").textContent = !model ? "" : references === 0
    ? `${model.label} takes no reference images.`
    : `${model.label} takes up to ${references} reference image${references === 1 ? "" : "s"}.`;
  $("model-about").textContent = model ? model.description : "";
}

$("model").addEventListener("change", offerWhatTheModelAccepts);

function createParams(form) {
  const value = (name) => form.elements[name].value.trim();
  const params = { OutputImageCount: Number(value("OutputImageCount") || 1) };
  const model = state.models?.models.find((entry) => entry.label === value("Model"));
  if (model) Object.assign(params, { ModelName: model.name, ModelVersion: model.version });
  for (const name of ["Prompt", "NegativePrompt", "SceneType", "Operator"]) {
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
  const urls = $("references").disabled ? [] : value("ImageUrls").split(/\s+/).filter(Boolean);
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
  th.scope = "row";
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
  $("task-failure").hidden = true;
  $("task-progress").value = 0;
  $("task-steps").textContent = "";
  $("task-running").hidden = false;
  $("task-images").replaceChildren();
  $("task-details").replaceChildren();
  $("rerun").hidden = $("cancel-task").hidden = $("delete-task").hidden = true;
  $("task-error").textContent = "";
  $("task-label").textContent = "";
  $("task-label-source").textContent = "The implicit label (GB 45438-2025) is read from the first image once it is done.";
}

// Shows the task and, while it waits or runs, reads it again every TASK_POLL_MS. ``opened``: the
// person opened it (a refusal shown before is cleared), not a poll.
async function showTask(taskId, opened = true) {
  clearTimeout(state.pollTimer);
  if ($("task").dataset.taskId !== taskId) clearTask(taskId);
  if (opened) $("task-error").textContent = "";
  let task;
  try {
    task = await call("DescribeAigcTaskStatus", { TaskId: taskId });
  } catch (error) {
    $("task-error").textContent = error.message;
    return;
  }
  if (location.hash !== `#/task/${taskId}`) return; // the person moved on meanwhile
  const info = JSON.parse(task.TaskInfo || "{}");
  const status = task.TaskStatus;
  $("task-status").textContent = status;
  $("task-status").className = `status ${status}`;
  const failed = status === "FAILED";
  const waiting = ["waiting for a worker", queuePosition(info)].filter(Boolean).join(" · ");
  setText($("task-message"), { PENDING: waiting, RUNNING: "generating" }[status] || ""); // read out when it changes
  $("task-failure").hidden = !failed;
  $("task-failure").textContent = failed ? `Why it failed: ${task.TaskResultMsg || "no reason was recorded."}` : "";
  $("task-running").hidden = status !== "RUNNING"; // while it waits, its place in the queue says more
  if (failed) $("task-label-source").textContent = "A failed task has no image, so no label.";
  $("task-progress").value = info.progress || 0;
  $("task-steps").textContent = info.steps ? `step ${info.step} of ${info.steps}` : "";
  $("rerun").hidden = status !== "FINISHED"; // a failed task would fail again; a running one is still running
  $("cancel-task").hidden = !UNFINISHED.has(status);
  $("delete-task").hidden = UNFINISHED.has(status); // a waiting or running task is cancelled first
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
  row(details, "Created", localTime(task.CreateTime));
  row(details, "Started", localTime(task.ScheduledTime));
  row(details, "Finished", localTime(task.FinishedTime));
  row(details, "Request", task.RequestBody);
  $("task").dataset.request = task.RequestBody || "{}";
  if (status === "FINISHED") {
    const { Urls } = (await call("DescribeAigcTaskList", { QueryTaskFilter: { TaskId: taskId } })).Tasks[0] || {};
    showImages(Urls || [], body.ExtraParameters?.OutputFormat || "png", taskId);
  } else {
    $("task-images").replaceChildren();
  }
  if (status === "PENDING" || status === "RUNNING") {
    state.pollTimer = setTimeout(() => showTask(taskId, false), TASK_POLL_MS);
  }
}

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

// Cancel: a waiting task ends at once, a running one at its next step; either way it is FAILED from
// now, with the server's message. A refusal (it had finished meanwhile) is shown under the buttons.
$("cancel-task").addEventListener("click", async () => {
  const taskId = $("task").dataset.taskId;
  const button = $("cancel-task");
  const focused = document.activeElement === button; // a disabled button loses the focus
  button.disabled = true;
  const refused = await attempt("CancelAigcImageTask", taskId);
  button.disabled = false;
  await showTask(taskId);
  $("task-error").textContent = refused;
  if (focused) (button.hidden ? $("delete-task") : button).focus(); // the keyboard stays where it was
});

$("delete-task").addEventListener("click", async () => {
  const taskId = $("task").dataset.taskId;
  if (!(await confirmDelete(taskId))) return;
  const refused = await attempt("DeleteAigcImageTask", taskId);
  if (refused) {
    await showTask(taskId);
    $("task-error").textContent = refused;
    return;
  }
  state.notice = `Task ${taskId} deleted.`;
  location.hash = "#/gallery"; // which reads the gallery again
});

// Asks before a delete; true when the person confirms. "Keep it" has the focus first, and Escape keeps
// the task too; on closing, the dialog gives the focus back to the button that opened it.
function confirmDelete(taskId) {
  const dialog = $("confirm-delete");
  $("confirm-delete-id").textContent = taskId;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "delete"), { once: true });
  });
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
    link.textContent = `Download image ${index + 1}`;
    const caption = document.createElement("figcaption");
    caption.append(link);
    figure.append(image, caption);
    return figure;
  });
  $("task-images").replaceChildren(...figures);
  if (!urls.length) return;
  readLabel(urls[0]).then(({ source, label }) => {
    if ($("task").dataset.taskId !== taskId) return;
    $("task-label-source").textContent = source;
    $("task-label").textContent = label;
  });
}

// The implicit AIGC label the image carries: PNG iTXt "AIGC", or a JPEG's XMP property TC260:AIGC.
async function readLabel(url) {
  const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
  const shown = (text) => JSON.stringify(JSON.parse(text), null, 2);
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
          const label = shown(new TextDecoder().decode(data.subarray(start)));
          return { source: "Read from the PNG's AIGC text chunk (GB 45438-2025 implicit label):", label };
        }
      }
      offset += 12 + length;
    }
    return { source: "", label: "(no AIGC label in this image)" };
  }
  const text = new TextDecoder().decode(bytes.subarray(0, 65536)); // XMP is UTF-8
  const packet = text.match(/<x:xmpmeta[\s\S]*?<\/x:xmpmeta>/);
  if (packet) {
    const xml = new DOMParser().parseFromString(packet[0], "application/xml");
    for (const element of xml.getElementsByTagName("*")) {
      const value = element.getAttributeNS("http://www.tc260.org.cn/ns/AIGC/1.0/", "AIGC");
      if (value) return { source: "Read from the JPEG's XMP packet, property TC260:AIGC (GB 45438-2025 implicit label):", label: shown(value) };
    }
  }
  return { source: "", label: "(no AIGC label in this image)" };
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
  clearTimeout(state.galleryTimer);
  state.page = more ? state.page + 1 : 1;
  $("gallery-notice").textContent = state.notice; // e.g. the task just deleted on its page
  $("gallery-error").textContent = "";
  state.notice = "";
  const reply = await call("DescribeAigcTaskList", galleryQuery(state.page, PAGE_SIZE));
  state.tasks = more ? state.tasks.concat(reply.Tasks) : reply.Tasks;
  await readQueuePositions(state.tasks);
  renderGallery(reply.Total);
}

// Waiting and running cards change: the tasks shown are read again until none is unfinished.
async function refreshGallery() {
  if ($("gallery").hidden) return; // the person moved on
  try {
    const reply = await call("DescribeAigcTaskList", galleryQuery(1, Math.min(state.page * PAGE_SIZE, 100)));
    state.tasks = reply.Tasks.concat(state.tasks.slice(reply.Tasks.length));
    await readQueuePositions(state.tasks);
    if ($("gallery").hidden) return;
    renderGallery(reply.Total);
  } catch (error) {
    console.error(error);
    state.galleryTimer = setTimeout(refreshGallery, GALLERY_REFRESH_MS);
  }
}

// The list carries no queue positions: they are read for the waiting tasks nearest their turn (the
// oldest shown), a few per refresh; the others show none.
async function readQueuePositions(tasks) {
  const waiting = tasks.filter((task) => task.TaskStatus === "PENDING").slice(-GALLERY_POSITIONS);
  await Promise.all(waiting.map(async (task) => {
    try {
      const status = await call("DescribeAigcTaskStatus", { TaskId: task.TaskId });
      if (status.TaskStatus === "PENDING") task.TaskInfo = status.TaskInfo;
    } catch (error) {
      console.error(error); // the card shows no position
    }
  }));
}

function galleryQuery(page, size) {
  const status = $("gallery-filters").elements.status.value;
  return { PageNum: page, PageSize: size, ...(status ? { QueryTaskFilter: { TaskStatus: status } } : {}) };
}

function renderGallery(total) {
  const filters = $("gallery-filters").elements;
  const model = filters.model.value.trim().toLowerCase();
  const text = filters.text.value.trim().toLowerCase();
  const shown = state.tasks.filter((task) => {
    const body = JSON.parse(task.RequestBody || "{}");
    const label = `${body.ModelName}:${body.ModelVersion}`.toLowerCase();
    return (!model || label.includes(model)) && (!text || (body.Prompt || "").toLowerCase().includes(text));
  });
  placeCards(shown);
  $("gallery-count").textContent = `${shown.length} shown of ${total}`;
  $("gallery-more").hidden = state.page * PAGE_SIZE >= total;
  clearTimeout(state.galleryTimer);
  if (shown.some((task) => UNFINISHED.has(task.TaskStatus))) state.galleryTimer = setTimeout(refreshGallery, GALLERY_REFRESH_MS);
}

// Cards are kept and updated in place, so a refresh never takes the keyboard focus away.
function placeCards(tasks) {
  const container = $("gallery-cards");
  const existing = new Map([...container.children].map((element) => [element.dataset.taskId, element]));
  let previous = null;
  for (const task of tasks) {
    const element = existing.get(task.TaskId) || newCard(task.TaskId);
    existing.delete(task.TaskId);
    fillCard(element, task);
    const wanted = previous ? previous.nextElementSibling : container.firstElementChild;
    if (wanted !== element) container.insertBefore(element, wanted);
    previous = element;
  }
  for (const element of existing.values()) element.remove();
}

// A card: a link to the task (Tab reaches it, Enter opens it), then one button, Cancel while the task
// waits or runs and Delete once it has finished; the same button, relabelled, so it keeps the focus.
function newCard(taskId) {
  const card = document.createElement("article");
  card.className = "card";
  card.dataset.taskId = taskId;
  const link = Object.assign(document.createElement("a"), { className: "open", href: `#/task/${taskId}` });
  const button = Object.assign(document.createElement("button"), { type: "button", className: "small" });
  const actions = document.createElement("div");
  actions.className = "card-actions";
  actions.append(button);
  card.append(link, actions);
  return card;
}

function fillCard(card, task) {
  const info = JSON.parse(task.TaskInfo || "{}");
  const signature = JSON.stringify([task.TaskStatus, info.step, info.tasks_ahead, task.Urls, task.TaskResultMsg]);
  if (card.dataset.signature === signature) return;
  card.dataset.signature = signature;
  card.dataset.status = task.TaskStatus;
  const body = JSON.parse(task.RequestBody || "{}");
  const thumb = document.createElement("div");
  thumb.className = "thumb";
  if (task.TaskStatus === "FINISHED" && task.Urls?.length) {
    const image = document.createElement("img");
    image.src = task.Urls[0];
    image.alt = ""; // the card's text names it
    image.loading = "lazy";
    thumb.append(image);
  } else {
    thumb.classList.add("state", task.TaskStatus);
    const what = document.createElement("strong");
    what.textContent = { PENDING: "Waiting for a worker", RUNNING: "Generating", FAILED: "Failed" }[task.TaskStatus] || task.TaskStatus;
    thumb.append(what);
    if (task.TaskStatus === "PENDING" && queuePosition(info)) {
      const position = Object.assign(document.createElement("span"), { className: "ahead", textContent: queuePosition(info) });
      thumb.append(position);
    }
    if (task.TaskStatus === "RUNNING") {
      const progress = Object.assign(document.createElement("progress"), { max: 100, value: info.progress || 0 });
      progress.setAttribute("aria-hidden", "true");
      const steps = document.createElement("span");
      steps.textContent = info.steps ? `step ${info.step} of ${info.steps}` : "";
      thumb.append(progress, steps);
    }
    if (task.TaskStatus === "FAILED") {
      const why = document.createElement("span");
      why.className = "why";
      why.textContent = task.TaskResultMsg || "no reason was recorded";
      thumb.append(why);
    }
  }
  const prompt = document.createElement("div");
  prompt.className = "prompt";
  prompt.textContent = body.Prompt || "(no prompt)";
  const status = document.createElement("span");
  status.className = `status ${task.TaskStatus}`;
  status.textContent = task.TaskStatus;
  const when = document.createElement("small");
  when.textContent = ` ${localTime(task.CreateTime)}`;
  card.querySelector("a.open").replaceChildren(thumb, prompt, status, when);
  const button = card.querySelector(".card-actions button");
  const action = UNFINISHED.has(task.TaskStatus) ? "Cancel" : "Delete";
  button.dataset.action = action.toLowerCase();
  button.textContent = action;
  button.setAttribute("aria-label", `${action} task: ${prompt.textContent}`); // which of the many buttons
}

// A card's Cancel or Delete (after a confirmation); the gallery is read again, and a refusal shown.
$("gallery-cards").addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const card = button.closest(".card");
  const { taskId } = card.dataset;
  const deleting = button.dataset.action === "delete";
  $("gallery-notice").textContent = $("gallery-error").textContent = "";
  if (deleting && !(await confirmDelete(taskId))) return;
  const focused = document.activeElement === button; // a disabled button loses the focus
  button.disabled = true;
  const refused = await attempt(deleting ? "DeleteAigcImageTask" : "CancelAigcImageTask", taskId);
  button.disabled = false;
  $("gallery-error").textContent = refused;
  if (!refused) $("gallery-notice").textContent = `Task ${taskId} ${deleting ? "deleted" : "cancelled"}.`;
  const gone = deleting && !refused;
  const next = gone ? (card.nextElementSibling || card.previousElementSibling)?.dataset.taskId : null;
  await refreshGallery();
  if (gone) (cardLink(next) || $("gallery").querySelector("h2")).focus(); // the keyboard goes on at its neighbour
  else if (focused && button.isConnected) button.focus();
});

function cardLink(taskId) {
  return taskId ? document.querySelector(`.card[data-task-id="${CSS.escape(taskId)}"] a.open`) : null;
}

$("gallery-filters").addEventListener("submit", (event) => {
  event.preventDefault();
  showGallery();
});
$("gallery-more").addEventListener("click", () => showGallery(true));

// -- the operator page --------------------------------------------------------------------------

// A table of records: a header row, then one row per record; on narrow screens each cell shows its column's name.
function listTable(table, columns, records) {
  const head = table.createTHead();
  head.replaceChildren();
  const headRow = head.insertRow();
  for (const name of columns) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = name;
    headRow.append(th);
  }
  const body = table.tBodies[0] || table.createTBody();
  body.replaceChildren();
  for (const record of records) {
    const tr = body.insertRow();
    record.forEach((value, index) => {
      const td = tr.insertCell();
      td.dataset.label = columns[index];
      if (value instanceof Node) td.append(value);
      else td.textContent = value;
    });
  }
  if (!records.length) {
    const td = body.insertRow().insertCell();
    td.colSpan = columns.length;
    td.textContent = "none";
  }
}

async function showOperator() {
  const response = await fetch(new URL("readyz", API), { cache: "no-store" });
  const view = await response.json();
  const detail = "workers" in view; // /readyz tells the queue and the workers only to api.metrics_networks
  $("operator-ready").textContent = (view.ready ? "Ready: tasks can run." : "Not ready: tasks wait.") +
    (detail ? "" : " The queue and the workers are shown only to browsers on the networks in api.metrics_networks.");
  const queue = $("operator-queue");
  queue.replaceChildren();
  row(queue, "Waiting", view.queue?.waiting);
  row(queue, "Running", view.queue?.running);
  // A model a worker cannot load is told once, in full, under Problems; here only which.
  listTable($("operator-workers"), ["Worker", "Device", "State", "Loaded models", "Cannot load", "Running", "Seen"],
    (view.workers || []).map((worker) => [worker.id, worker.device, worker.state, worker.loaded.join(", ") || "none",
      Object.keys(worker.failed || {}).join(", ") || "none", String(worker.running.length), `${worker.seen_seconds_ago} s ago`]));
  const problems = view.problems || [];
  $("operator-problems").replaceChildren(...(problems.length ? problems : ["none"]).map((problem) => {
    const item = document.createElement("li");
    item.textContent = problem;
    return item;
  }));
  const reply = await call("DescribeAigcTaskList", { PageSize: 20, QueryTaskFilter: { TaskStatus: "FAILED" } });
  // Tasks that failed for one reason are one row; a reason already under Problems is not told again.
  const groups = new Map();
  for (const task of reply.Tasks) {
    const reason = task.TaskResultMsg || "no reason was recorded";
    if (!groups.has(reason)) groups.set(reason, []);
    groups.get(reason).push(task);
  }
  listTable($("operator-failures"), ["Last failed", "Tasks", "Why"], [...groups].map(([reason, tasks]) => {
    const links = document.createElement("span");
    tasks.forEach((task, index) => {
      const link = Object.assign(document.createElement("a"), { href: `#/task/${task.TaskId}`, textContent: task.TaskId });
      links.append(...(index ? [document.createElement("br"), link] : [link]));
    });
    const told = problems.find((problem) => problem.includes(reason)); // "<worker> cannot load <model>: <why>"
    const why = told ? `${told.slice(0, told.indexOf(": "))}: see Problems above` : reason;
    return [localTime(tasks[0].FinishedTime), links, why];
  }));
}

$("operator-refresh").addEventListener("click", showOperator);

// -- pages --------------------------------------------------------------------------------------

async function route(event) {
  clearTimeout(state.pollTimer);
  clearTimeout(state.galleryTimer);
  const [, page = "gallery", arg] = location.hash.split("/");
  const name = state.key ? page : "signin";
  const leaving = event?.oldURL ? new URL(event.oldURL).hash.split("/") : [];
  if (leaving[1] === "task") state.returnTo = leaving[2];
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== name;
  for (const link of document.querySelectorAll("nav a")) {
    const current = link.hash === `#/${name}`;
    link.classList.toggle("current", current);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (event) $(name)?.querySelector("h2")?.focus(); // a new page: the keyboard starts at its heading
  try {
    if (name === "task") await showTask(arg);
    if (name === "gallery") await showGallery();
    if (name === "operator") await showOperator();
    if (name === "create") await loadModels();
  } catch (error) {
    console.error(error);
  }
  if (name === "gallery" && state.returnTo) { // back from a task: the keyboard is where it was
    cardLink(state.returnTo)?.focus();
    state.returnTo = null;
  }
}

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !$("task").hidden && !event.defaultPrevented && !$("confirm-delete").open) {
    location.hash = "#/gallery"; // not when Escape closes the confirmation
  }
});

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
