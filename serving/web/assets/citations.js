// Numbered citations of answers grounded on knowledge bases (the Responses API's file_search tool).
//
// The server numbers the chunks it gives the model ([1], [2], ... in the order of the file_search_call's
// results) and annotates every [n] the answer cites with a file_citation (file_id, filename, index of the
// marker in the text, counted in code points). An answer that cites nothing is annotated with each file it was
// given, at the end of the text. Here the markers become buttons that open the cited chunk; all text goes in
// through textContent.

import { t } from "./i18n.js";

const MARKER = /\[(\d{1,2}(?:\s*,\s*\d{1,2})*)\]/g;
const MARKER_AT_START = /^\[(\d{1,2}(?:\s*,\s*\d{1,2})*)\]/;

/** The UTF-16 offset of the code point offset points (Python's str index) in text. */
function utf16Offset(text, points) {
  let offset = 0;
  for (let i = 0; i < points && offset < text.length; i += 1) {
    offset += text.codePointAt(offset) > 0xffff ? 2 : 1;
  }
  return offset;
}

function source(number, annotation, result, inline) {
  return {
    number,
    fileId: String(annotation.file_id ?? ""),
    filename: String(annotation.filename ?? result?.filename ?? ""),
    text: typeof result?.text === "string" ? result.text : "",
    score: typeof result?.score === "number" ? result.score : null,
    inline,
  };
}

/**
 * The citations of an answer: [{number, fileId, filename, text, score, inline}] ordered by number, from the
 * text's file_citation annotations and the file_search_call's results (results[n - 1] is source [n]).
 * inline: the answer carries the marker [n] (else the server annotated an uncited answer with its files).
 */
export function buildCitations(text, annotations, results) {
  const cited = new Map();
  const uncited = [];
  for (const annotation of annotations ?? []) {
    if (annotation?.type !== "file_citation") continue;
    const marker = MARKER_AT_START.exec(text.slice(utf16Offset(text, Number(annotation.index) || 0)));
    if (!marker) {
      uncited.push(annotation);
      continue;
    }
    const numbers = marker[1].split(",").map((n) => Number.parseInt(n, 10));
    const same = (n) => results?.[n - 1]?.file_id === annotation.file_id;
    // Without results the annotations at one marker follow its numbers in order.
    const number = results?.length ? numbers.find((n) => same(n) && !cited.has(n))
      : numbers.find((n) => !cited.has(n));
    if (number !== undefined) cited.set(number, source(number, annotation, results?.[number - 1], true));
  }
  const out = [...cited.values()].sort((a, b) => a.number - b.number);
  if (out.length) return out;
  return uncited.map((annotation, index) =>
    source(index + 1, annotation, results?.find((r) => r.file_id === annotation.file_id), false));
}

/** A button that opens citation number of the answer. */
function citationButton(citation, className, content) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = className;
  button.dataset.action = "cite";
  button.dataset.cite = String(citation.number);
  const label = t("citationOpen", { number: citation.number, filename: citation.filename });
  button.setAttribute("aria-label", label);
  button.title = label;
  button.append(...content);
  return button;
}

/** Turn the [n] markers in a rendered answer (outside code) into buttons for the citations it has. */
export function decorateCitations(body, citations) {
  const byNumber = new Map(citations.filter((c) => c.inline).map((c) => [c.number, c]));
  if (!byNumber.size) return;
  const walker = document.createTreeWalker(body, NodeFilter.SHOW_TEXT, {
    acceptNode: (node) => (node.parentElement.closest("code, pre, a, button") ? NodeFilter.FILTER_REJECT
      : NodeFilter.FILTER_ACCEPT),
  });
  const nodes = [];
  while (walker.nextNode()) if (walker.currentNode.data.search(MARKER) >= 0) nodes.push(walker.currentNode);
  for (const node of nodes) {
    const parts = [];
    let last = 0;
    for (const match of node.data.matchAll(MARKER)) {
      const numbers = match[1].split(",").map((n) => Number.parseInt(n, 10));
      if (!numbers.some((n) => byNumber.has(n))) continue;
      parts.push(document.createTextNode(node.data.slice(last, match.index)));
      for (const n of numbers) {
        const citation = byNumber.get(n);
        parts.push(citation ? citationButton(citation, "citation", [String(n)]) : document.createTextNode(`[${n}]`));
      }
      last = match.index + match[0].length;
    }
    parts.push(document.createTextNode(node.data.slice(last)));
    node.replaceWith(...parts);
  }
}

/** The numbered list of an answer's sources, each a button that opens its passage. */
export function sourcesList(citations) {
  const box = document.createElement("div");
  box.className = "sources";
  const heading = document.createElement("p");
  heading.className = "sources-heading";
  heading.textContent = t("sources");
  const list = document.createElement("ol");
  for (const citation of citations) {
    const item = document.createElement("li");
    const number = document.createElement("span");
    number.className = "citation-number";
    number.textContent = String(citation.number);
    const name = document.createElement("span");
    name.className = "source-name";
    name.textContent = citation.filename || t("sourceUnnamed");
    item.append(citationButton(citation, "source-button", [number, name]));
    list.append(item);
  }
  box.append(heading, list);
  return box;
}

/** Show the passage of a citation in the citation dialog (plain text). */
export function showPassage(citation) {
  const dialog = document.getElementById("citation-dialog");
  document.getElementById("citation-title").textContent = t("citationTitle", { number: citation.number });
  document.getElementById("citation-file").textContent = citation.filename || t("sourceUnnamed");
  const score = document.getElementById("citation-score");
  score.hidden = citation.score === null;
  score.textContent = citation.score === null ? "" : t("citationScore", { score: citation.score.toFixed(2) });
  const passage = document.getElementById("citation-passage");
  passage.textContent = citation.text || t("citationNoText");
  passage.dataset.empty = String(!citation.text);
  dialog.showModal();
  passage.scrollTop = 0;
}

/** Follow a streamed event of the file_search tool (the search item, annotations); true when it was one. */
export function applySearchEvent(message, event) {
  const item = event.item;
  if (event.type === "response.output_item.added" && item?.type === "file_search_call") {
    message.searching = true;
  } else if (event.type === "response.output_item.done" && item?.type === "file_search_call") {
    message.searching = false;
    message.searchResults = Array.isArray(item.results) ? item.results : [];
  } else if (event.type === "response.output_text.annotation.added" && event.annotation) {
    (message.annotations ??= []).push(event.annotation);
  } else {
    return false;
  }
  return true;
}

/** Once the answer has ended: keep its citations (with the cited passages) on the message, drop the rest. */
export function settleCitations(message, response = null) {
  const output = response?.output ?? [];
  const search = output.find((item) => item.type === "file_search_call");
  const text = output.filter((item) => item.type === "message").flatMap((item) => item.content ?? [])
    .find((part) => part.type === "output_text");
  const results = Array.isArray(search?.results) ? search.results : message.searchResults;
  const annotations = text?.annotations?.length ? text.annotations : message.annotations;
  if (annotations?.length && message.content) message.citations = buildCitations(message.content, annotations, results);
  delete message.searching;
  delete message.searchResults;
  delete message.annotations;
}
