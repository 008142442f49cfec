// Modal dialogs (native <dialog>: focus stays inside, Escape cancels): settings, API key, delete
// confirmations.

import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);

function show(dialog) {
  return new Promise((resolve) => {
    dialog.returnValue = "";
    dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true });
    dialog.showModal();
  });
}

/** Let the user edit settings; resolves to the changed fields, or null when cancelled. */
export async function editSettings(settings, { onOpenKey }) {
  const dialog = $("settings-dialog");
  const prompt = $("system-prompt");
  const temperature = $("temperature");
  const temperatureValue = $("temperature-value");
  const maxTokens = $("max-tokens");
  const storeOnServer = $("store-on-server");
  storeOnServer.checked = Boolean(settings.storeOnServer);
  prompt.value = settings.systemPrompt;
  temperature.value = String(settings.temperature);
  temperatureValue.value = Number(settings.temperature).toFixed(1);
  maxTokens.value = settings.maxTokens ? String(settings.maxTokens) : "";
  temperature.oninput = () => {
    temperatureValue.value = Number(temperature.value).toFixed(1);
  };
  $("open-key").onclick = () => {
    dialog.close("cancel");
    onOpenKey();
  };
  if ((await show(dialog)) !== "save") return null;
  const tokens = Number.parseInt(maxTokens.value, 10);
  return {
    systemPrompt: prompt.value,
    temperature: Math.min(2, Math.max(0, Number(temperature.value))),
    maxTokens: Number.isFinite(tokens) && tokens > 0 ? tokens : null,
    storeOnServer: storeOnServer.checked,
  };
}

/**
 * Ask for an API key; resolves to the new key, "" to forget the saved one, or null when cancelled.
 * rejected: the server has just refused currentKey, and the dialog says so.
 */
export async function askApiKey(currentKey, rejected = false) {
  const input = $("api-key");
  input.value = currentKey;
  $("key-rejected").hidden = !(rejected && currentKey);
  $("forget-key").hidden = !currentKey;
  const answer = await show($("key-dialog"));
  if (answer === "forget") return "";
  if (answer !== "save") return null;
  return input.value.trim() || null;
}

/** Ask before deleting something: heading and body are shown as text; true when confirmed. */
export async function confirmAction(heading, body) {
  $("delete-title").textContent = heading;
  $("delete-body").textContent = body;
  return (await show($("delete-dialog"))) === "delete";
}

/** Ask before deleting the conversation called title. */
export function confirmDelete(title) {
  return confirmAction(t("deleteTitle"), t("deleteBody", { title }));
}
