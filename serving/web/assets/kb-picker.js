// The composer's knowledge-base picker: which knowledge bases the current conversation searches (sent as the
// Responses API's file_search tool). A toggle button opens a list of checkboxes; Escape closes it. The choice is
// kept with the conversation as [{id, name}], so the page needs no request to show it; the list of knowledge
// bases is read when the picker opens.

import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
let hooks = { selected: () => [], select: () => {}, manage: () => {}, load: async () => null };
let stores = null; // the server's knowledge bases once read: [{id, name}]

function setOpen(open) {
  $("kb-picker-menu").hidden = !open;
  $("kb-picker-toggle").setAttribute("aria-expanded", String(open));
}

/** Show the knowledge bases (newest first; before they are read, the conversation's own) with the
 * conversation's choice ticked, and the toggle's summary. */
export function renderPicker(list = stores) {
  stores = list;
  const selected = hooks.selected();
  const chosen = new Set(selected.map((s) => s.id));
  const shown = stores ?? selected;
  const options = shown.map((store) => {
    const label = document.createElement("label");
    label.className = "check-row kb-option";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = store.id;
    box.checked = chosen.has(store.id);
    const name = document.createElement("span");
    name.textContent = store.name || t("kbUnnamed");
    label.append(box, name);
    return label;
  });
  const box = $("kb-picker-options");
  const focused = box.contains(document.activeElement) ? document.activeElement.value : null;
  box.replaceChildren(...options);
  if (focused !== null) [...box.querySelectorAll("input")].find((input) => input.value === focused)?.focus();
  $("kb-picker-none").hidden = shown.length > 0 || stores === null;
  const names = selected.map((s) => s.name || t("kbUnnamed"));
  const summary = !names.length ? t("kbPickerOff")
    : names.length === 1 ? t("kbPickerOne", { name: names[0] }) : t("kbPickerMany", { count: names.length });
  $("kb-picker-label").textContent = summary;
  $("kb-picker-toggle").dataset.active = String(names.length > 0);
}

/** Wire the picker. selected(): [{id, name}] chosen for the current conversation; select(list): keep a new
 * choice; manage(): open the knowledge-base panel; load(): read the knowledge bases from the server. */
export function initPicker(options) {
  hooks = { ...hooks, ...options };
  const toggle = $("kb-picker-toggle");
  const menu = $("kb-picker-menu");
  toggle.addEventListener("click", async () => {
    const open = menu.hidden;
    setOpen(open);
    if (!open) return;
    (menu.querySelector("input") ?? $("kb-picker-manage")).focus();
    menu.setAttribute("aria-busy", "true");
    await hooks.load(); // calls renderPicker with the server's list
    menu.removeAttribute("aria-busy");
    if (!menu.hidden && !menu.contains(document.activeElement)) {
      (menu.querySelector("input") ?? $("kb-picker-manage")).focus();
    }
  });
  menu.addEventListener("change", () => {
    const names = new Map((stores ?? hooks.selected()).map((s) => [s.id, s.name]));
    hooks.select([...menu.querySelectorAll("input:checked")].map((box) => ({ id: box.value,
                                                                             name: names.get(box.value) ?? "" })));
    renderPicker();
  });
  menu.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    event.preventDefault();
    setOpen(false);
    toggle.focus();
  });
  document.addEventListener("click", (event) => {
    if (!menu.hidden && !event.target.closest("#kb-picker")) setOpen(false);
  });
  $("kb-picker-manage").addEventListener("click", () => {
    setOpen(false);
    hooks.manage();
  });
}
