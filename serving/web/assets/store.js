// Everything the page keeps lives in this browser's localStorage: conversations, settings, API key.

const KEYS = {
  conversations: "nexus-k:conversations",
  current: "nexus-k:current-conversation",
  settings: "nexus-k:settings",
  apiKey: "nexus-k:api-key",
};

export const DEFAULT_SYSTEM_PROMPT =
  "당신은 공공기관 업무를 돕는 한국어 AI 비서입니다. 정확하고 간결하게 한국어로 답하세요.";

/** Settings a fresh browser starts with. */
export const DEFAULT_SETTINGS = Object.freeze({
  lang: "ko",
  model: null,
  systemPrompt: DEFAULT_SYSTEM_PROMPT,
  temperature: 0.7,
  maxTokens: null,
  storeOnServer: false, // off: the server keeps nothing (store: false, the whole history sent each turn)
});

function read(key, fallback) {
  try {
    const raw = localStorage.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback; // unreadable or corrupted: start over rather than break the page
  }
}

/** Write key; false when the browser refuses (storage full or disabled). */
function write(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch {
    return false;
  }
}

/** A short random id that also works outside secure contexts (where crypto.randomUUID is missing). */
export function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(9));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function isMessage(message) {
  return message && typeof message === "object" && typeof message.content === "string" &&
    (message.role === "user" || message.role === "assistant");
}

/** Saved conversations, newest first; malformed entries are dropped. */
export function loadConversations() {
  const list = read(KEYS.conversations, []);
  if (!Array.isArray(list)) return [];
  return list
    .filter((c) => c && typeof c.id === "string" && Array.isArray(c.messages))
    .map((c) => ({
      ...c,
      title: typeof c.title === "string" ? c.title : "",
      messages: c.messages.filter(isMessage).map((m) => ({ ...m, id: m.id || newId() })),
    }))
    .sort((a, b) => (b.updatedAt ?? 0) - (a.updatedAt ?? 0));
}

/** Persist all conversations; false when the browser's storage is full. */
export function saveConversations(conversations) {
  return write(KEYS.conversations, conversations);
}

/** A new, empty conversation (saved once it has a message). */
export function newConversation() {
  const now = Date.now();
  return { id: newId(), title: "", messages: [], createdAt: now, updatedAt: now };
}

/** A conversation title from its first user message: one line, at most 40 characters. */
export function titleFrom(text) {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > 40 ? `${line.slice(0, 40)}…` : line;
}

/** The id of the conversation shown last, or null. */
export function loadCurrentId() {
  return read(KEYS.current, null);
}

/** Remember which conversation is shown. */
export function saveCurrentId(id) {
  write(KEYS.current, id);
}

/** Settings merged over the defaults, with values checked. */
export function loadSettings() {
  const saved = read(KEYS.settings, {});
  const settings = { ...DEFAULT_SETTINGS, ...(saved && typeof saved === "object" ? saved : {}) };
  if (!["ko", "en"].includes(settings.lang)) settings.lang = "ko";
  const temperature = Number(settings.temperature);
  settings.temperature = Number.isFinite(temperature) ? Math.min(2, Math.max(0, temperature)) : 0.7;
  const maxTokens = Number.parseInt(settings.maxTokens, 10);
  settings.maxTokens = Number.isFinite(maxTokens) && maxTokens > 0 ? maxTokens : null;
  if (typeof settings.systemPrompt !== "string") settings.systemPrompt = DEFAULT_SYSTEM_PROMPT;
  settings.storeOnServer = settings.storeOnServer === true;
  return settings;
}

/** Persist settings. */
export function saveSettings(settings) {
  write(KEYS.settings, settings);
}

/** The saved API key, or "" when none. */
export function loadApiKey() {
  const key = read(KEYS.apiKey, "");
  return typeof key === "string" ? key : "";
}

/** Save the API key ("" forgets it). */
export function saveApiKey(key) {
  if (key) write(KEYS.apiKey, key);
  else localStorage.removeItem(KEYS.apiKey);
}
