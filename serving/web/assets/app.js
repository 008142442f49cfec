// The chat page: state, event wiring and the streaming loop. Talks to the same-origin OpenAI API: conversations
// go through the Responses API (stored server-side only when the user opts in).

import { deleteResponse, listModels, streamResponse, whoAmI } from "./api.js";
import { applySearchEvent, settleCitations, showPassage } from "./citations.js";
import { askApiKey, confirmDelete, editSettings } from "./dialogs.js";
import { getLang, setLang, t } from "./i18n.js";
import { initKnowledgePanel, openPanel, refreshKnowledgeBases, renderKnowledgePanel } from "./kb-panel.js";
import { initPicker, renderPicker } from "./kb-picker.js";
import * as store from "./store.js";
import {
  conversationItem,
  copyText,
  editTitle,
  errorText,
  messageElement,
  storedError,
  updateMessageElement,
} from "./view.js";

const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"),
  list: $("conversation-list"),
  historyEmpty: $("history-empty"),
  messages: $("messages"),
  thread: $("thread"),
  emptyState: $("empty-state"),
  input: $("composer-input"),
  send: $("send-button"),
  stop: $("stop-button"),
  model: $("model-select"),
  banner: $("banner"),
  bannerText: $("banner-text"),
  bannerAction: $("banner-action"),
  menu: $("menu-toggle"),
  scrim: $("scrim"),
};

const state = {
  conversations: store.loadConversations(),
  currentId: store.loadCurrentId(),
  settings: store.loadSettings(),
  apiKey: store.loadApiKey(),
  models: [],
  modelsError: null,
  active: null, // the request being streamed: {controller, conversation, message}
  composing: false,
  draftKnowledgeBases: [], // [{id, name}] chosen before a new conversation's first message
};

function current() {
  return state.conversations.find((c) => c.id === state.currentId) ?? null;
}

/** The knowledge bases the current conversation searches: [{id, name}]. */
function chosenKnowledgeBases() {
  const conversation = current();
  return conversation ? (conversation.knowledgeBases ?? []) : state.draftKnowledgeBases;
}

function chooseKnowledgeBases(list) {
  const conversation = current();
  if (!conversation) {
    state.draftKnowledgeBases = list;
    return;
  }
  conversation.knowledgeBases = list;
  persist();
}

/** The server's list of knowledge bases changed: forget chosen ones that are gone, show the new names. */
function knowledgeBasesChanged(stores) {
  const names = new Map(stores.map((s) => [s.id, s.name]));
  const keep = (list) => list.filter((kb) => names.has(kb.id)).map((kb) => ({ id: kb.id, name: names.get(kb.id) }));
  state.draftKnowledgeBases = keep(state.draftKnowledgeBases);
  for (const conversation of state.conversations) {
    if (conversation.knowledgeBases?.length) conversation.knowledgeBases = keep(conversation.knowledgeBases);
  }
  persist();
  renderPicker(stores);
}

function persist() {
  if (!store.saveConversations(state.conversations.filter((c) => c.messages.length))) {
    showBanner(t("errStorage"));
  }
}

// ---- rendering ----

function showBanner(text, action = null) {
  ui.bannerText.textContent = text;
  ui.bannerAction.hidden = !action;
  if (action) {
    ui.bannerAction.textContent = action.label;
    ui.bannerAction.onclick = action.run;
  }
  ui.banner.hidden = false;
}

function hideBanner() {
  ui.banner.hidden = true;
}

function renderConversationList() {
  const saved = state.conversations.filter((c) => c.messages.length);
  ui.list.replaceChildren(...saved.map((c) => conversationItem(c, c.id === state.currentId)));
  ui.historyEmpty.hidden = saved.length > 0;
}

function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function renderThread() {
  const messages = current()?.messages ?? [];
  ui.thread.replaceChildren(...messages.map(messageElement));
  ui.emptyState.hidden = messages.length > 0;
  const emptyBody = $("empty-body");
  emptyBody.dataset.i18n = state.settings.storeOnServer ? "emptyBodyStored" : "emptyBody";
  emptyBody.textContent = t(emptyBody.dataset.i18n);
  renderPicker();
  scrollToBottom();
}

function refreshMessage(message) {
  const article = ui.thread.querySelector(`[data-msg-id="${message.id}"]`);
  if (!article) return;
  const pinned = nearBottom();
  updateMessageElement(article, message);
  if (pinned) scrollToBottom();
}

// Streaming re-renders the whole answer's Markdown. Once per frame at most, and for long answers (where
// one render takes a while) never more than a third of the time, so typing and scrolling stay smooth.
let refreshQueued = false;
let nextRefreshAt = 0;
function queueRefresh(message) {
  if (refreshQueued) return;
  refreshQueued = true;
  setTimeout(() => requestAnimationFrame(() => {
    refreshQueued = false;
    const start = performance.now();
    refreshMessage(message);
    nextRefreshAt = performance.now() + 2 * (performance.now() - start);
  }), Math.max(0, nextRefreshAt - performance.now()));
}

function renderModels() {
  const options = state.models.map((model) => {
    const option = document.createElement("option");
    option.value = model.id;
    option.textContent = model.parent ? `${model.id} ${t("adapterSuffix")}` : model.id;
    return option;
  });
  if (!options.length) {
    const option = document.createElement("option");
    option.value = "";
    option.textContent = state.modelsError ? t("modelsUnavailable") : t("modelsLoading");
    options.push(option);
  }
  ui.model.replaceChildren(...options);
  ui.model.disabled = !state.models.length;
  // No saved choice: an adapter the operator served on top of a base (the demo's Korean chat tuning) first.
  if (state.models.length && !state.models.some((m) => m.id === state.settings.model)) {
    state.settings.model = (state.models.find((m) => m.parent) ?? state.models[0]).id;
  }
  if (state.models.length) ui.model.value = state.settings.model;
}

function setBusy(busy) {
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.messages.setAttribute("aria-busy", String(busy));
  if (!busy && document.activeElement === document.body) ui.input.focus();
}

function renderAll() {
  renderModels();
  renderConversationList();
  renderThread();
}

// ---- server ----

/** Ask for an API key (rejected: the server just answered 401); true when a new key was saved. */
async function requestKey(rejected = true) {
  const key = await askApiKey(state.apiKey, rejected);
  if (key === null) return false;
  state.apiKey = key;
  store.saveApiKey(key);
  return Boolean(key);
}

async function loadModels() {
  try {
    state.models = await listModels(state.apiKey);
    state.modelsError = null;
    hideBanner();
  } catch (error) {
    state.models = [];
    state.modelsError = storedError(error);
    const auth = state.modelsError.kind === "auth";
    showBanner(errorText(state.modelsError), {
      label: auth ? t("apiKeyManage") : t("reconnect"),
      run: auth ? () => requestKey().then(loadModels) : loadModels,
    });
  }
  renderModels();
  if (state.modelsError?.kind === "auth" && (await requestKey())) await loadModels();
}

/** Behind a single-sign-on proxy: show the signed-in person (the server needs no key from the page then). */
async function showSignedIn() {
  const who = await whoAmI(state.apiKey);
  const badge = $("signed-in");
  if (!badge || !who?.user) return;
  badge.textContent = who.organisation ? `${who.user} · ${who.organisation}` : who.user;
  badge.title = t("signedIn");
  badge.hidden = false;
}

/**
 * What to send for the answer upTo: the conversation as input items, or (continuing) the id of the newest
 * stored response and only the messages after it. Failed and empty messages are left out.
 */
function conversationInput(conversation, upTo, continueStored) {
  const before = conversation.messages.slice(0, conversation.messages.indexOf(upTo));
  let start = 0;
  let previous = null;
  if (continueStored) {
    for (let i = before.length - 1; i >= 0; i -= 1) {
      const m = before[i];
      if (m.role === "assistant" && m.stored && m.responseId && m.state === "done") {
        previous = m.responseId;
        start = i + 1;
        break;
      }
    }
  }
  const input = before.slice(start)
    .filter((m) => m.state !== "error" && m.content)
    .map((m) => ({ role: m.role, content: m.content }));
  return { input, previous };
}

/** The text of a finished response's output items of one type (when nothing of it was streamed). */
function outputText(response, itemType, partType) {
  return (response?.output ?? [])
    .filter((item) => item.type === itemType)
    .flatMap((item) => item.content ?? [])
    .filter((part) => part.type === partType)
    .map((part) => part.text ?? "")
    .join("");
}

function applyEvent(message, event) {
  switch (event.type) {
    case "response.created":
      message.responseId = event.response?.id ?? null;
      break;
    case "response.output_text.delta":
      message.content += event.delta ?? "";
      break;
    case "response.reasoning_text.delta":
      message.reasoning = (message.reasoning ?? "") + (event.delta ?? "");
      break;
    case "response.completed":
    case "response.incomplete": {
      const response = event.response ?? {};
      settleCitations(message, response);
      if (!message.reasoning) {
        const thought = outputText(response, "reasoning", "reasoning_text");
        if (thought) message.reasoning = thought;
      }
      if (!message.content) message.content = outputText(response, "message", "output_text");
      if (event.type === "response.incomplete") {
        message.finishReason = response.incomplete_details?.reason === "content_filter" ? "content_filter" : "length";
      } else {
        message.finishReason = "stop";
      }
      if (response.usage) {
        message.usage = { prompt: response.usage.input_tokens, completion: response.usage.output_tokens };
      }
      break;
    }
    default:
      return applySearchEvent(message, event);
  }
  return true;
}

async function generate(conversation) {
  const message = { id: store.newId(), role: "assistant", content: "", state: "streaming" };
  conversation.messages.push(message);
  conversation.updatedAt = Date.now();
  state.conversations = [conversation, ...state.conversations.filter((c) => c !== conversation)];
  persist();
  renderConversationList();
  renderThread();
  const controller = new AbortController();
  state.active = { controller, conversation, message };
  setBusy(true);
  let askedForKey = false;
  try {
    if (!state.models.length) {
      await loadModels(); // asks for a key itself on 401
      askedForKey = state.modelsError?.kind === "auth";
    }
    if (state.modelsError) throw state.modelsError;
    message.model = ui.model.value;
    const storeOnServer = Boolean(state.settings.storeOnServer);
    let continueStored = storeOnServer;
    for (;;) {
      const { input, previous } = conversationInput(conversation, message, continueStored);
      const body = { model: message.model, input, store: storeOnServer };
      if (previous) body.previous_response_id = previous;
      if (state.settings.systemPrompt.trim()) body.instructions = state.settings.systemPrompt;
      body.temperature = state.settings.temperature;
      if (state.settings.maxTokens) body.max_output_tokens = state.settings.maxTokens;
      const stores = (conversation.knowledgeBases ?? []).map((kb) => kb.id);
      if (stores.length) {
        // Answer from the chosen knowledge bases; the results come back so that citations can show passages.
        body.tools = [{ type: "file_search", vector_store_ids: stores }];
        body.include = ["file_search_call.results"];
      }
      try {
        for await (const event of streamResponse(body, { apiKey: state.apiKey, signal: controller.signal })) {
          if (event.type === "response.created") message.stored = storeOnServer;
          if (applyEvent(message, event) && (event.type.endsWith(".delta") || event.item)) queueRefresh(message);
        }
        break;
      } catch (error) {
        // The stored response we continue from is gone (deleted, expired, another database): send the
        // whole conversation instead, once.
        if (previous && error.code === "previous_response_not_found" && !message.responseId) {
          continueStored = false;
          continue;
        }
        throw error;
      }
    }
    message.state = "done";
  } catch (error) {
    if (error.name === "AbortError") {
      message.state = "stopped";
    } else {
      message.state = "error";
      message.error = storedError(error);
    }
  } finally {
    settleCitations(message);
    state.active = null;
    conversation.updatedAt = Date.now();
    persist();
    refreshMessage(message);
    setBusy(false);
  }
  if (message.error?.kind === "auth" && !askedForKey && (await requestKey())) await retry(conversation, message);
  if (message.error?.kind === "kbnotfound") await refreshKnowledgeBases(); // drops the ones that are gone
}

async function retry(conversation, message) {
  if (state.active || conversation.messages.at(-1) !== message) return;
  conversation.messages.pop();
  await generate(conversation);
}

async function send() {
  const text = ui.input.value.trim();
  if (state.active || !text.trim()) return;
  let conversation = current();
  if (!conversation) {
    conversation = store.newConversation();
    state.conversations.unshift(conversation);
    state.currentId = conversation.id;
    store.saveCurrentId(conversation.id);
  }
  if (!conversation.title) conversation.title = store.titleFrom(text);
  if (!conversation.knowledgeBases) conversation.knowledgeBases = state.draftKnowledgeBases;
  conversation.messages.push({ id: store.newId(), role: "user", content: text });
  ui.input.value = "";
  resizeInput();
  await generate(conversation);
}

// ---- conversations ----

function openConversation(id) {
  if (id === null) state.draftKnowledgeBases = chosenKnowledgeBases(); // a new chat searches what the last one did
  state.currentId = id;
  store.saveCurrentId(id);
  renderConversationList();
  renderThread();
  closeSidebar();
  ui.input.focus();
}

async function deleteConversation(conversation) {
  if (!(await confirmDelete(conversation.title || t("untitled")))) return;
  if (state.active?.conversation === conversation) state.active.controller.abort();
  state.conversations = state.conversations.filter((c) => c !== conversation);
  persist();
  if (state.currentId === conversation.id) {
    state.currentId = null;
    store.saveCurrentId(null);
    renderThread();
  }
  renderConversationList();
  // Answers kept on the server (the "store on the server" setting) are deleted there too.
  const stored = [...new Set(conversation.messages.filter((m) => m.stored && m.responseId).map((m) => m.responseId))];
  if (!stored.length) return;
  const results = await Promise.all(stored.map((id) => deleteResponse(id, state.apiKey)));
  if (results.includes(false)) showBanner(t("errDeleteStored"));
}

async function renameConversation(conversation, item) {
  const title = await editTitle(item, conversation.title || t("untitled"));
  if (title !== null) {
    conversation.title = title;
    persist();
  }
  renderConversationList();
}

// ---- input ----

function resizeInput() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 240)}px`;
}

function onInputKeydown(event) {
  if (event.key !== "Enter" || event.shiftKey) return;
  // While a Hangul syllable is being composed, Enter commits it to the text box: sending now would
  // drop or duplicate the last syllable. Safari reports the commit as keyCode 229 after compositionend.
  if (event.isComposing || event.keyCode === 229 || state.composing) return;
  event.preventDefault();
  send();
}

function openSidebar() {
  ui.app.classList.add("sidebar-open");
  ui.menu.setAttribute("aria-expanded", "true");
  ui.scrim.hidden = false;
}

function closeSidebar() {
  ui.app.classList.remove("sidebar-open");
  ui.menu.setAttribute("aria-expanded", "false");
  ui.scrim.hidden = true;
}

function wire() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  ui.input.addEventListener("keydown", onInputKeydown);
  ui.input.addEventListener("compositionstart", () => (state.composing = true));
  ui.input.addEventListener("compositionend", () => (state.composing = false));
  ui.input.addEventListener("blur", () => (state.composing = false));
  ui.input.addEventListener("input", resizeInput);
  ui.stop.addEventListener("click", () => state.active?.controller.abort());
  $("new-chat").addEventListener("click", () => openConversation(null));
  ui.model.addEventListener("change", () => {
    state.settings.model = ui.model.value;
    store.saveSettings(state.settings);
  });
  $("lang-toggle").addEventListener("click", () => {
    state.settings.lang = getLang() === "ko" ? "en" : "ko";
    store.saveSettings(state.settings);
    setLang(state.settings.lang);
    renderAll();
    renderKnowledgePanel();
  });
  $("kb-open").addEventListener("click", () => openPanel());
  $("settings-open").addEventListener("click", async () => {
    const changes = await editSettings(state.settings, { onOpenKey: () => requestKey(false).then(loadModels) });
    if (!changes) return;
    Object.assign(state.settings, changes);
    store.saveSettings(state.settings);
    if (!current()?.messages.length) renderThread(); // the empty page says where chats are kept
  });
  ui.menu.addEventListener("click", () =>
    ui.app.classList.contains("sidebar-open") ? closeSidebar() : openSidebar(),
  );
  ui.scrim.addEventListener("click", closeSidebar);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && ui.app.classList.contains("sidebar-open")) closeSidebar();
  });
  ui.list.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    const item = event.target.closest("li[data-conv-id]");
    const conversation = state.conversations.find((c) => c.id === item?.dataset.convId);
    if (!button || !conversation) return;
    if (button.dataset.action === "open") openConversation(conversation.id);
    else if (button.dataset.action === "rename") renameConversation(conversation, item);
    else if (button.dataset.action === "delete") deleteConversation(conversation);
  });
  ui.thread.addEventListener("click", (event) => {
    const codeCopy = event.target.closest(".copy-code");
    if (codeCopy) return copyText(codeCopy.closest(".code-block").querySelector("code").textContent, codeCopy);
    const button = event.target.closest("button[data-action]");
    const id = event.target.closest("[data-msg-id]")?.dataset.msgId;
    const conversation = current();
    const message = conversation?.messages.find((m) => m.id === id);
    if (!button || !message) return;
    if (button.dataset.action === "copy") copyText(message.content, button);
    else if (button.dataset.action === "retry") retry(conversation, message);
    else if (button.dataset.action === "cite") {
      const citation = message.citations?.find((c) => String(c.number) === button.dataset.cite);
      if (citation) showPassage(citation);
    }
  });
}

function start() {
  // A reply that was streaming when the page closed can't resume: keep what arrived, marked stopped.
  for (const message of state.conversations.flatMap((c) => c.messages)) {
    if (message.state === "streaming") message.state = "stopped";
  }
  if (!current()) state.currentId = null;
  setLang(state.settings.lang);
  initKnowledgePanel({ apiKey: () => state.apiKey, onAuthError: () => requestKey(), onChange: knowledgeBasesChanged });
  initPicker({
    selected: chosenKnowledgeBases,
    select: chooseKnowledgeBases,
    manage: () => openPanel(),
    load: () => refreshKnowledgeBases(),
  });
  wire();
  renderAll();
  resizeInput();
  ui.input.focus();
  loadModels().then(showSignedIn);
}

start();
