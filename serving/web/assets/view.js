// DOM for messages and the conversation list. All user and model text goes in through textContent or
// the DOM-building Markdown renderer; nothing here parses HTML.

import { decorateCitations, sourcesList } from "./citations.js";
import { t } from "./i18n.js";
import { icon } from "./icons.js";
import { renderMarkdown } from "./markdown.js";

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function iconButton(action, iconName, label, text) {
  const button = element("button", text ? "button small ghost" : "icon-button small");
  button.type = "button";
  button.dataset.action = action;
  button.setAttribute("aria-label", label);
  button.title = label;
  button.append(icon(iconName));
  if (text) button.append(element("span", "", text));
  return button;
}

/** The sentence explaining a stored error ({kind, detail, retryAfter}) in the active language. */
export function errorText(error) {
  switch (error.kind) {
    case "network":
      return t("errNetwork");
    case "auth":
      return t("errAuth");
    case "rate":
      return error.retryAfter ? t("errRateAfter", { seconds: error.retryAfter }) : t("errRate");
    case "quota":
      return t("errQuota");
    case "context":
      return t("errContext");
    case "notfound":
      return t("errNotFound");
    case "kbnotfound":
      return t("errKbNotFound");
    case "server":
      return t("errServer");
    case "interrupted":
      return t("errInterrupted");
    default:
      return t("errBadRequest");
  }
}

/** An error as the page stores it on a message: plain data that survives JSON. */
export function storedError(error) {
  return { kind: error.kind ?? "network", detail: error.detail ?? "", retryAfter: error.retryAfter ?? null };
}

/** A new <article> for one chat message. */
export function messageElement(message) {
  const article = element("article", `message ${message.role}`);
  article.dataset.msgId = message.id;
  const avatar = element("div", "avatar", message.role === "user" ? t("you") : "K");
  avatar.setAttribute("aria-hidden", "true");
  const main = element("div", "message-main");
  main.append(element("h3", "visually-hidden", message.role === "user" ? t("you") : t("assistant")));
  main.append(element("div", message.role === "user" ? "message-body plain" : "message-body markdown"));
  article.append(avatar, main);
  updateMessageElement(article, message);
  return article;
}

/** Bring an existing message <article> up to date with message (content, state, error, footer). */
export function updateMessageElement(article, message) {
  const state = message.state ?? "done";
  article.dataset.state = state;
  const main = article.querySelector(".message-main");
  const body = main.querySelector(".message-body");
  if (message.role === "user") {
    body.textContent = message.content;
  } else if (!message.content && state === "streaming") {
    const typing = element("span", "typing");
    typing.append(element("span"), element("span"), element("span"));
    // While the file_search tool looks through the knowledge bases, say so (the answer comes after).
    typing.append(element("span", message.searching ? "searching-note" : "visually-hidden",
                          message.searching ? t("searchingDocs") : t("generating")));
    body.replaceChildren(typing);
  } else {
    body.replaceChildren(renderMarkdown(message.content, { copyLabel: t("copy"), copyCodeLabel: t("copyCode") }));
    if (message.citations?.length) decorateCitations(body, message.citations);
  }
  if (message.role === "assistant") updateThinking(main, body, message, state);
  for (const old of main.querySelectorAll(".message-error, .message-footer, .sources")) old.remove();
  if (message.citations?.length && state !== "streaming") main.append(sourcesList(message.citations));
  if (message.error) main.append(errorBox(message.error));
  if (message.role === "assistant" && state !== "streaming") main.append(footer(message));
}

/**
 * A reasoning model's thinking, folded away above the answer (a closed <details>, opened on request; a
 * re-render while streaming keeps whatever the reader chose). Shown as plain text.
 */
function updateThinking(main, body, message, state) {
  let thinking = main.querySelector(":scope > details.thinking");
  if (!message.reasoning) {
    thinking?.remove();
    return;
  }
  if (!thinking) {
    thinking = element("details", "thinking");
    const summary = element("summary", "thinking-summary");
    summary.append(element("span", "thinking-label"));
    thinking.append(summary, element("div", "thinking-body"));
    body.before(thinking);
  }
  const live = state === "streaming" && !message.content;
  thinking.dataset.live = String(live);
  const label = thinking.querySelector(".thinking-label");
  const text = live ? t("thinkingLive") : t("thinking");
  if (label.textContent !== text) label.textContent = text;
  const content = thinking.querySelector(".thinking-body");
  if (content.textContent !== message.reasoning) content.textContent = message.reasoning;
}

function errorBox(error) {
  const box = element("div", "message-error");
  box.dataset.errorKind = error.kind;
  box.append(icon("alert"));
  const text = element("div", "message-error-text");
  text.append(element("p", "", errorText(error)));
  if (error.detail && error.kind !== "network") {
    text.append(element("p", "message-error-detail", t("errDetail", { detail: error.detail })));
  }
  box.append(text);
  return box;
}

function footer(message) {
  const bar = element("div", "message-footer");
  bar.append(element("span", "ai-label", t("aiGenerated")));  // AI Basic Act: each answer labelled as AI-made
  if (message.state === "stopped") bar.append(element("span", "note", t("stopped")));
  else if (message.finishReason === "length") bar.append(element("span", "note", t("truncated")));
  const meta = [];
  if (message.model) meta.push(message.model);
  if (message.usage) meta.push(t("usage", { prompt: message.usage.prompt, completion: message.usage.completion }));
  if (meta.length) bar.append(element("span", "meta", meta.join(" · ")));
  bar.append(element("span", "spacer"));
  if (message.state === "error") bar.append(iconButton("retry", "retry", t("retry"), t("retry")));
  if (message.content) bar.append(iconButton("copy", "copy", t("copy"), t("copy")));
  return bar;
}

/** One <li> of the conversation list, marked aria-current when it is the one shown. */
export function conversationItem(conversation, isCurrent) {
  const title = conversation.title || t("untitled");
  const item = element("li", "conversation");
  item.dataset.convId = conversation.id;
  const open = element("button", "conversation-open");
  open.type = "button";
  open.dataset.action = "open";
  if (isCurrent) open.setAttribute("aria-current", "page");
  open.append(icon("chat"), element("span", "conversation-title", title));
  const actions = element("div", "conversation-actions");
  actions.append(
    iconButton("rename", "edit", `${t("rename")}: ${title}`),
    iconButton("delete", "trash", `${t("remove")}: ${title}`),
  );
  item.append(open, actions);
  return item;
}

/** Swap a conversation item's title for a text box; resolves to the new title, or null if cancelled. */
export function editTitle(item, currentTitle) {
  return new Promise((resolve) => {
    const open = item.querySelector(".conversation-open");
    const input = element("input", "rename-input");
    input.type = "text";
    input.value = currentTitle;
    input.maxLength = 100;
    input.setAttribute("aria-label", t("renameLabel"));
    open.hidden = true;
    item.prepend(input);
    input.focus();
    input.select();
    let done = false;
    const finish = (value) => {
      if (done) return;
      done = true;
      input.remove();
      open.hidden = false;
      resolve(value);
    };
    input.addEventListener("keydown", (event) => {
      // Enter that finishes a Hangul syllable belongs to the IME, not to us.
      if (event.isComposing || event.keyCode === 229) return;
      if (event.key === "Enter") {
        event.preventDefault();
        finish(input.value.trim() || null);
      } else if (event.key === "Escape") {
        event.preventDefault();
        finish(null);
      }
    });
    input.addEventListener("blur", () => finish(input.value.trim() || null));
  });
}

/** Copy text to the clipboard and say so on button for a moment (works on plain-http LAN addresses too). */
export async function copyText(text, button) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    // No async clipboard outside secure contexts (plain http on a LAN address): use a hidden textarea.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "clipboard-helper";
    document.body.append(area);
    area.select();
    ok = document.execCommand("copy");
    area.remove();
  }
  const label = button.querySelector("span") ?? button;
  const before = label.textContent;
  label.textContent = ok ? t("copied") : t("copyFailed");
  button.dataset.copied = String(ok);
  setTimeout(() => {
    label.textContent = before;
    delete button.dataset.copied;
  }, 1500);
}
