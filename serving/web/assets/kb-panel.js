// The knowledge-base panel (a <dialog>): create and delete knowledge bases, upload documents by drag and drop
// or a file picker (with upload progress), and follow each document's processing on the server until it is
// completed or failed (polled with a growing wait, and only while something is in progress).

import { confirmAction } from "./dialogs.js";
import { t } from "./i18n.js";
import { icon } from "./icons.js";
import * as kbApi from "./kb-api.js";
import { errorText } from "./view.js";

const $ = (id) => document.getElementById(id);
const FIRST_POLL_MS = 1000;
const MAX_POLL_MS = 15000;
const POLL_GROWTH = 1.6;
export const ACCEPTED = ".hwp,.hwpx,.pdf,.docx,.txt,.md,.markdown,.html,.htm,.xlsx,.csv,.tsv";

const kb = {
  stores: [], // [{id, name, file_counts}] newest first
  loaded: false,
  selected: null, // the knowledge base shown on the right
  files: new Map(), // store id -> [{id, status, last_error, filename, bytes}]
  names: new Map(), // file id -> {filename, bytes}
  uploads: [], // {key, storeId, name, loaded, total, stage: waiting | uploading | adding | failed, error}
  polls: new Map(), // store id -> {delay, timer}
  queue: Promise.resolve(), // uploads run one after another
  lastError: null,
};
let hooks = { apiKey: () => "", onAuthError: async () => false, onChange: () => {} };
let uploadCounter = 0;

/** The knowledge bases the page knows of, newest first (empty until loaded). */
export function knowledgeBases() {
  return kb.stores;
}

/** Whether the list of knowledge bases has been read from the server. */
export function knowledgeBasesLoaded() {
  return kb.loaded;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function errorMessage(error) {
  return error.detail ? `${errorText(error)} ${t("errDetail", { detail: error.detail })}` : errorText(error);
}

function showError(error) {
  const box = $("kb-error");
  box.hidden = !error;
  box.textContent = error ? errorMessage(error) : "";
}

function announce(text) {
  $("kb-announce").textContent = text;
}

/** Run an API call; on 401 ask for a key once and run it again. Errors are shown in the panel; null then. */
async function call(run) {
  try {
    showError(null);
    return await run(hooks.apiKey());
  } catch (error) {
    if (error.kind === "auth" && (await hooks.onAuthError())) return call(run);
    kb.lastError = error;
    showError(error);
    return null;
  }
}

/** Read the list of knowledge bases (and the uploaded files' names) from the server. */
export async function refreshKnowledgeBases() {
  const stores = await call((key) => kbApi.listKnowledgeBases(key));
  if (stores === null) return false;
  kb.stores = stores.map((s) => ({ id: String(s.id), name: String(s.name ?? ""), file_counts: s.file_counts ?? {} }));
  kb.loaded = true;
  if (!kb.stores.some((s) => s.id === kb.selected)) kb.selected = kb.stores[0]?.id ?? null;
  for (const store of kb.stores) if (store.file_counts.in_progress) schedulePoll(store.id);
  render();
  hooks.onChange(kb.stores);
  if (kb.selected && $("kb-dialog").open) await loadFiles(kb.selected);
  return true;
}

async function loadNames() {
  const names = await call((key) => kbApi.uploadedFiles(key));
  if (names) kb.names = names;
}

async function loadFiles(storeId) {
  const files = await call((key) => kbApi.listKnowledgeBaseFiles(storeId, key));
  if (files === null) return;
  if (files.some((f) => !kb.names.has(f.id))) await loadNames();
  const before = new Map((kb.files.get(storeId) ?? []).map((f) => [f.id, f.status]));
  const rows = files.map((f) => ({
    id: String(f.id),
    status: String(f.status),
    last_error: f.last_error ?? null,
    filename: kb.names.get(f.id)?.filename || String(f.id),
    bytes: kb.names.get(f.id)?.bytes ?? 0,
  }));
  kb.files.set(storeId, rows);
  for (const row of rows) {
    if (before.get(row.id) === "in_progress" && row.status !== "in_progress") {
      announce(t(row.status === "completed" ? "kbAnnounceDone" : "kbAnnounceFailed", { filename: row.filename }));
    }
  }
  const store = kb.stores.find((s) => s.id === storeId);
  if (store) store.file_counts = countStatuses(rows);
  if (rows.some((r) => r.status === "in_progress")) schedulePoll(storeId);
  render();
}

function countStatuses(rows) {
  const counts = { in_progress: 0, completed: 0, failed: 0, cancelled: 0, total: rows.length };
  for (const row of rows) counts[row.status] = (counts[row.status] ?? 0) + 1;
  return counts;
}

// ---- polling: only while a document is being processed, waiting longer each time, paused in hidden tabs ----

function schedulePoll(storeId, restart = false) {
  const poll = kb.polls.get(storeId);
  if (poll && !restart) return;
  if (poll) clearTimeout(poll.timer);
  const next = { delay: FIRST_POLL_MS, timer: null };
  next.timer = setTimeout(() => pollOnce(storeId, next), next.delay);
  kb.polls.set(storeId, next);
}

async function pollOnce(storeId, poll) {
  if (kb.polls.get(storeId) !== poll) return; // restarted or stopped meanwhile
  if (document.hidden) {
    document.addEventListener("visibilitychange", () => pollOnce(storeId, poll), { once: true });
    return;
  }
  poll.timer = null;
  if (kb.stores.some((s) => s.id === storeId)) await loadFiles(storeId); // leaves this poll in place
  if (kb.polls.get(storeId) !== poll) return; // a new upload restarted the waits, or the store was deleted
  const busy = (kb.files.get(storeId) ?? []).some((f) => f.status === "in_progress");
  if (!busy || !kb.stores.some((s) => s.id === storeId)) {
    kb.polls.delete(storeId);
    return;
  }
  poll.delay = Math.min(poll.delay * POLL_GROWTH, MAX_POLL_MS);
  poll.timer = setTimeout(() => pollOnce(storeId, poll), poll.delay);
}

function stopPoll(storeId) {
  clearTimeout(kb.polls.get(storeId)?.timer);
  kb.polls.delete(storeId);
}

// ---- actions ----

async function createStore(name) {
  const created = await call((key) => kbApi.createKnowledgeBase(name, key));
  if (!created) return;
  kb.stores.unshift({ id: String(created.id), name: String(created.name ?? name), file_counts: created.file_counts ?? {} });
  kb.selected = String(created.id);
  kb.files.set(kb.selected, []);
  $("kb-new-name").value = "";
  render();
  hooks.onChange(kb.stores);
  announce(t("kbAnnounceCreated", { name }));
  $("kb-pick").focus();
}

function uploadFiles(fileList) {
  const storeId = kb.selected;
  if (!storeId) return;
  for (const file of fileList) {
    const upload = { key: `u${(uploadCounter += 1)}`, storeId, name: file.name, loaded: 0, total: file.size,
                     stage: "waiting", error: null };
    kb.uploads.push(upload);
    kb.queue = kb.queue.then(() => uploadOne(upload, file));
  }
  render();
}

async function uploadOne(upload, file) {
  if (!kb.stores.some((s) => s.id === upload.storeId)) {
    kb.uploads = kb.uploads.filter((u) => u !== upload);
    render();
    return;
  }
  upload.stage = "uploading";
  renderUploads();
  const onProgress = (loaded, total) => {
    upload.loaded = loaded;
    upload.total = total;
    updateProgress(upload);
  };
  const uploaded = await call((key) => kbApi.uploadFile(file, { apiKey: key, onProgress }));
  if (!uploaded) return failUpload(upload);
  upload.loaded = upload.total;
  upload.stage = "adding";
  renderUploads();
  kb.names.set(String(uploaded.id), { filename: String(uploaded.filename ?? file.name), bytes: file.size });
  const added = await call((key) => kbApi.addFile(upload.storeId, uploaded.id, key));
  if (!added) {
    await kbApi.deleteUploadedFile(uploaded.id, hooks.apiKey());
    return failUpload(upload);
  }
  kb.uploads = kb.uploads.filter((u) => u !== upload);
  const rows = kb.files.get(upload.storeId) ?? [];
  rows.push({ id: String(added.id), status: String(added.status), last_error: added.last_error ?? null,
              filename: String(uploaded.filename ?? file.name), bytes: file.size });
  kb.files.set(upload.storeId, rows);
  const store = kb.stores.find((s) => s.id === upload.storeId);
  if (store) store.file_counts = countStatuses(rows);
  if (added.status === "in_progress") schedulePoll(upload.storeId, true);
  render();
}

function failUpload(upload) {
  upload.stage = "failed";
  upload.error = kb.lastError ? errorMessage(kb.lastError) : "";
  showError(null);
  renderUploads();
}

/** Uploaded files of storeId that no other knowledge base the page knows of uses. */
async function filesOnlyIn(storeId, fileIds) {
  const others = kb.stores.filter((s) => s.id !== storeId);
  for (const other of others) if (!kb.files.has(other.id)) await loadFiles(other.id);
  const used = new Set(others.flatMap((s) => (kb.files.get(s.id) ?? []).map((f) => f.id)));
  return fileIds.filter((id) => !used.has(id));
}

async function deleteFile(storeId, file) {
  if (!(await confirmAction(t("kbDeleteFileTitle"), t("kbDeleteFileBody", { filename: file.filename })))) return;
  if ((await call((key) => kbApi.removeFile(storeId, file.id, key))) === null) return;
  for (const id of await filesOnlyIn(storeId, [file.id])) await kbApi.deleteUploadedFile(id, hooks.apiKey());
  const rows = (kb.files.get(storeId) ?? []).filter((f) => f.id !== file.id);
  kb.files.set(storeId, rows);
  const store = kb.stores.find((s) => s.id === storeId);
  if (store) store.file_counts = countStatuses(rows);
  render();
  announce(t("kbAnnounceFileDeleted", { filename: file.filename }));
  $("kb-pick").focus();
}

async function deleteStore(store) {
  if (!(await confirmAction(t("kbDeleteTitle"), t("kbDeleteBody", { name: store.name || t("kbUnnamed") })))) return;
  if (!kb.files.has(store.id)) await loadFiles(store.id);
  const fileIds = (kb.files.get(store.id) ?? []).map((f) => f.id);
  if ((await call((key) => kbApi.deleteKnowledgeBase(store.id, key))) === null) return;
  stopPoll(store.id);
  kb.stores = kb.stores.filter((s) => s !== store);
  kb.files.delete(store.id);
  kb.uploads = kb.uploads.filter((u) => u.storeId !== store.id);
  for (const id of await filesOnlyIn(store.id, fileIds)) await kbApi.deleteUploadedFile(id, hooks.apiKey());
  kb.selected = kb.stores[0]?.id ?? null;
  render();
  hooks.onChange(kb.stores);
  announce(t("kbAnnounceDeleted", { name: store.name || t("kbUnnamed") }));
  $("kb-new-name").focus();
  if (kb.selected && !kb.files.has(kb.selected)) await loadFiles(kb.selected);
}

// ---- rendering ----

function countsText(counts) {
  const parts = [t("kbFileCount", { count: counts.total ?? 0 })];
  if (counts.in_progress) parts.push(t("kbInProgressCount", { count: counts.in_progress }));
  if (counts.failed) parts.push(t("kbFailedCount", { count: counts.failed }));
  return parts.join(" · ");
}

function sizeText(bytes) {
  if (bytes >= 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  return bytes >= 1024 ? `${Math.round(bytes / 1024)} KB` : `${bytes} B`;
}

function renderStores() {
  const items = kb.stores.map((store) => {
    const item = element("li", "kb-store");
    const button = element("button", "kb-store-open");
    button.type = "button";
    button.dataset.storeId = store.id;
    if (store.id === kb.selected) button.setAttribute("aria-current", "true");
    button.append(icon("book"), element("span", "kb-store-name", store.name || t("kbUnnamed")),
                  element("span", "kb-store-counts", countsText(store.file_counts)));
    item.append(button);
    return item;
  });
  $("kb-store-list").replaceChildren(...items);
  $("kb-stores-empty").hidden = kb.stores.length > 0 || !kb.loaded;
}

function statusBadge(status) {
  const key = { in_progress: "kbStatusInProgress", completed: "kbStatusCompleted", failed: "kbStatusFailed",
                cancelled: "kbStatusCancelled" }[status] ?? "kbStatusInProgress";
  const badge = element("span", "kb-status", t(key));
  badge.dataset.status = status;
  return badge;
}

function fileRow(file) {
  const item = element("li", "kb-file");
  item.dataset.fileId = file.id;
  item.dataset.status = file.status;
  const head = element("div", "kb-file-head");
  head.append(icon("file"), element("span", "kb-file-name", file.filename));
  if (file.bytes) head.append(element("span", "kb-file-size", sizeText(file.bytes)));
  head.append(statusBadge(file.status));
  const remove = element("button", "icon-button small");
  remove.type = "button";
  remove.dataset.action = "delete-file";
  remove.dataset.focusKey = `delete-${file.id}`;
  const label = t("kbDeleteFileLabel", { filename: file.filename });
  remove.setAttribute("aria-label", label);
  remove.title = label;
  remove.append(icon("trash"));
  head.append(remove);
  item.append(head);
  if (file.status === "failed" && file.last_error) {
    const reason = element("p", "kb-file-error");
    const message = String(file.last_error.message ?? "");
    reason.append(icon("alert"), element("span", "", t("kbFailedReason", { message })));
    item.append(reason);
  }
  return item;
}

function uploadStageText(upload) {
  if (upload.stage === "waiting") return t("kbUploadWaiting");
  if (upload.stage === "adding") return t("kbUploadAdding");
  if (upload.stage === "failed") return t("kbUploadFailed", { message: upload.error ?? "" });
  const percent = upload.total ? Math.floor((100 * upload.loaded) / upload.total) : 0;
  return t("kbUploadProgress", { percent });
}

function updateProgress(upload) {
  const row = $("kb-uploads").querySelector(`[data-upload="${upload.key}"]`);
  if (!row) return;
  const bar = row.querySelector("progress");
  bar.max = Math.max(upload.total, 1);
  bar.value = upload.loaded;
  row.querySelector(".kb-upload-stage").textContent = uploadStageText(upload);
}

function renderUploads() {
  const rows = kb.uploads.filter((u) => u.storeId === kb.selected).map((upload) => {
    const item = element("li", "kb-upload");
    item.dataset.upload = upload.key;
    item.dataset.stage = upload.stage;
    const name = element("span", "kb-file-name", upload.name);
    const bar = element("progress");
    bar.setAttribute("aria-label", t("kbUploadLabel", { filename: upload.name }));
    item.append(name, bar, element("span", "kb-upload-stage"));
    if (upload.stage === "failed") {
      const dismiss = element("button", "button small ghost", t("close"));
      dismiss.type = "button";
      dismiss.dataset.action = "dismiss-upload";
      item.append(dismiss);
    }
    return item;
  });
  $("kb-uploads").replaceChildren(...rows);
  for (const upload of kb.uploads) if (upload.storeId === kb.selected) updateProgress(upload);
}

function renderDetail() {
  const store = kb.stores.find((s) => s.id === kb.selected);
  $("kb-detail").hidden = !store;
  if (!store) return;
  $("kb-detail-name").textContent = store.name || t("kbUnnamed");
  const files = kb.files.get(store.id);
  $("kb-files").replaceChildren(...(files ?? []).map(fileRow));
  $("kb-files-empty").hidden = !files || files.length > 0;
  renderUploads();
}

function render() {
  const focused = document.activeElement?.dataset?.focusKey ??
    (document.activeElement?.dataset?.storeId ? `store-${document.activeElement.dataset.storeId}` : null);
  renderStores();
  renderDetail();
  if (!focused) return;
  const again = focused.startsWith("store-")
    ? $("kb-store-list").querySelector(`[data-store-id="${CSS.escape(focused.slice(6))}"]`)
    : $("kb-dialog").querySelector(`[data-focus-key="${CSS.escape(focused)}"]`);
  again?.focus();
}

// ---- wiring ----

/** Open the panel (and read the knowledge bases afresh). */
export async function openPanel() {
  const dialog = $("kb-dialog");
  if (!dialog.open) dialog.showModal();
  render();
  await refreshKnowledgeBases();
}

function wireDropZone() {
  const zone = $("kb-drop");
  const hasFiles = (event) => [...(event.dataTransfer?.types ?? [])].includes("Files");
  zone.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    zone.dataset.dragging = "true";
  });
  zone.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.dataset.dragging = "true";
  });
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) delete zone.dataset.dragging;
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    delete zone.dataset.dragging;
    if (event.dataTransfer?.files?.length) uploadFiles(event.dataTransfer.files);
  });
  // A file dropped beside the zone must not make the browser leave the page to show it.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => {
      if ([...(event.dataTransfer?.types ?? [])].includes("Files")) event.preventDefault();
    });
  }
}

/** Wire the panel. apiKey(): the key to send; onAuthError(): ask for a key (true when one was given);
 * onChange(stores): the list of knowledge bases changed. */
export function initKnowledgePanel(options) {
  hooks = { ...hooks, ...options };
  const input = $("kb-file-input");
  input.accept = ACCEPTED;
  $("kb-create-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("kb-new-name").value.trim();
    if (name) createStore(name);
  });
  $("kb-pick").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    if (input.files.length) uploadFiles([...input.files]);
    input.value = "";
  });
  $("kb-store-list").addEventListener("click", (event) => {
    const id = event.target.closest("[data-store-id]")?.dataset.storeId;
    if (!id) return;
    kb.selected = id;
    render();
    loadFiles(id);
  });
  $("kb-delete-store").addEventListener("click", () => {
    const store = kb.stores.find((s) => s.id === kb.selected);
    if (store) deleteStore(store);
  });
  $("kb-files").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action='delete-file']");
    const id = button?.closest("[data-file-id]")?.dataset.fileId;
    const file = (kb.files.get(kb.selected) ?? []).find((f) => f.id === id);
    if (file) deleteFile(kb.selected, file);
  });
  $("kb-uploads").addEventListener("click", (event) => {
    const key = event.target.closest("button[data-action='dismiss-upload']")?.closest("[data-upload]")?.dataset.upload;
    if (!key) return;
    kb.uploads = kb.uploads.filter((u) => u.key !== key);
    renderUploads();
    $("kb-pick").focus();
  });
  wireDropZone();
}

/** Re-render the panel's text (after a language switch). */
export function renderKnowledgePanel() {
  render();
}
