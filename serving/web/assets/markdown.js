// A small Markdown renderer that builds DOM nodes directly. Model text only ever becomes Text nodes
// (never innerHTML), so a reply holding <script> or <img onerror> is shown literally and cannot run.
// Covers what chat models write: paragraphs, headings, lists, quotes, tables, rules, fenced code,
// inline code, bold, italic, strikethrough and http(s)/mailto links.

const FENCE = /^( {0,3})(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}>[ \t]?(.*)$/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])[ \t]+(.*)$/;
const TABLE_DIVIDER = /^[ \t]*\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const LANGUAGE = /^[\w+#.-]{1,30}$/;
const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

// Earliest match wins; at one position the first alternative wins (escapes and code spans first).
const INLINE = new RegExp(
  [
    /\\([\\`*_{}[\]()#+\-.!|~>])/.source, // 1: backslash escape
    /(`+)([^`]|[^`][\s\S]*?[^`])\2(?!`)/.source, // 2, 3: code span
    /\*\*(?=\S)([\s\S]*?\S)\*\*/.source, // 4: strong
    /(?<!\w)__(?=\S)([\s\S]*?\S)__(?!\w)/.source, // 5: strong
    /~~(?=\S)([\s\S]*?\S)~~/.source, // 6: strikethrough
    /\*(?=[^\s*])([\s\S]*?[^\s*])\*(?!\*)/.source, // 7: emphasis
    /(?<!\w)_(?=[^\s_])([\s\S]*?[^\s_])_(?!\w)/.source, // 8: emphasis
    /\[([^\]\n]+)\]\([ \t]*<?([^\s<>()]+)>?(?:[ \t]+"[^"\n]*")?[ \t]*\)/.source, // 9, 10: link
    /(https?:\/\/[A-Za-z0-9\-._~:/?#@!$&*+,;=%]*[A-Za-z0-9\-_~/#@$&*+=%])/.source, // 11: bare URL
  ].join("|"),
  "g",
);

/**
 * Render Markdown text to a DocumentFragment. options.copyLabel / options.copyCodeLabel name the copy
 * button placed on each code block (the page handles its clicks by delegation on `.copy-code`).
 */
export function renderMarkdown(text, options = {}) {
  const fragment = document.createDocumentFragment();
  renderBlocks(String(text).replace(/\r\n?/g, "\n").split("\n"), fragment, options);
  return fragment;
}

function element(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function leadingSpaces(line) {
  return line.length - line.trimStart().length;
}

function isTableStart(lines, i) {
  return (
    i + 1 < lines.length &&
    lines[i].includes("|") &&
    lines[i + 1].includes("|") &&
    TABLE_DIVIDER.test(lines[i + 1])
  );
}

function startsBlock(lines, i) {
  const line = lines[i];
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    LIST_ITEM.test(line) ||
    isTableStart(lines, i)
  );
}

function renderBlocks(lines, parent, options) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let match;
    if (!line.trim()) {
      i += 1;
    } else if ((match = FENCE.exec(line))) {
      i = codeBlock(lines, i, match, parent, options);
    } else if ((match = HEADING.exec(line))) {
      // Headings inside a message rank below the page's own h1/h2.
      const heading = element(`h${Math.min(match[1].length + 2, 6)}`);
      renderInline(match[2], heading);
      parent.append(heading);
      i += 1;
    } else if (RULE.test(line)) {
      parent.append(element("hr"));
      i += 1;
    } else if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && (match = QUOTE.exec(lines[i]))) {
        inner.push(match[1]);
        i += 1;
      }
      const quote = element("blockquote");
      renderBlocks(inner, quote, options);
      parent.append(quote);
    } else if (LIST_ITEM.test(line)) {
      i = list(lines, i, parent, options);
    } else if (isTableStart(lines, i)) {
      i = table(lines, i, parent);
    } else {
      const paragraph = [line.trim()];
      i += 1;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines, i)) {
        paragraph.push(lines[i].trim());
        i += 1;
      }
      const p = element("p");
      renderInline(paragraph.join("\n"), p);
      parent.append(p);
    }
  }
}

function codeBlock(lines, start, match, parent, options) {
  const indent = match[1].length;
  const fence = match[2];
  const language = LANGUAGE.test(match[3]) ? match[3] : "";
  const closing = new RegExp(`^ {0,3}${fence[0] === "`" ? "`" : "~"}{${fence.length},}[ \\t]*$`);
  const body = [];
  let i = start + 1;
  // An unclosed fence (a reply still streaming) runs to the end of the text.
  while (i < lines.length && !closing.test(lines[i])) {
    const line = lines[i];
    body.push(line.slice(Math.min(indent, leadingSpaces(line))));
    i += 1;
  }
  const block = element("div", "code-block");
  const head = element("div", "code-head");
  const label = element("span", "code-lang");
  label.textContent = language || "text";
  const copy = element("button", "copy-code");
  copy.type = "button";
  copy.textContent = options.copyLabel ?? "Copy";
  copy.setAttribute("aria-label", options.copyCodeLabel ?? "Copy code");
  head.append(label, copy);
  const pre = element("pre");
  pre.tabIndex = 0; // scrollable: reachable by keyboard
  const code = element("code");
  if (language) code.className = `language-${language}`;
  code.textContent = body.join("\n");
  pre.append(code);
  block.append(head, pre);
  parent.append(block);
  return i < lines.length ? i + 1 : i;
}

function list(lines, start, parent, options) {
  const first = LIST_ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const listElement = element(ordered ? "ol" : "ul");
  if (ordered && Number.parseInt(first[2], 10) !== 1) listElement.start = Number.parseInt(first[2], 10);
  const sameList = (match) => match && match[1].length === indent && /\d/.test(match[2]) === ordered;
  const items = [];
  let loose = false;
  let i = start;
  let match;
  while (i < lines.length && sameList((match = LIST_ITEM.exec(lines[i])))) {
    const contentIndent = indent + match[2].length + 1;
    const item = [match[3]];
    i += 1;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) {
        let next = i + 1;
        while (next < lines.length && !lines[next].trim()) next += 1;
        if (next < lines.length && leadingSpaces(lines[next]) > indent) {
          item.push("");
          i += 1;
          continue;
        }
        break;
      }
      if (leadingSpaces(line) > indent) {
        item.push(line.slice(Math.min(leadingSpaces(line), contentIndent)));
      } else if (startsBlock(lines, i)) {
        break;
      } else {
        item.push(line.trim()); // lazy continuation of the item's paragraph
      }
      i += 1;
    }
    items.push(item);
    let next = i;
    while (next < lines.length && !lines[next].trim()) next += 1;
    if (next > i && next < lines.length && sameList(LIST_ITEM.exec(lines[next]))) {
      loose = true;
      i = next;
    }
  }
  for (const item of items) {
    const li = element("li");
    renderBlocks(item, li, options);
    if (!loose) {
      for (const p of [...li.children].filter((child) => child.tagName === "P")) p.replaceWith(...p.childNodes);
    }
    listElement.append(li);
  }
  parent.append(listElement);
  return i;
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
}

function table(lines, start, parent) {
  const header = splitRow(lines[start]);
  const alignments = splitRow(lines[start + 1]).map((cell) => {
    if (cell.startsWith(":") && cell.endsWith(":")) return "center";
    if (cell.endsWith(":")) return "right";
    return cell.startsWith(":") ? "left" : "";
  });
  const makeRow = (cells, tag) => {
    const tr = element("tr");
    header.forEach((_, column) => {
      const cell = element(tag);
      if (tag === "th") cell.scope = "col";
      if (alignments[column]) cell.style.textAlign = alignments[column];
      renderInline(cells[column] ?? "", cell);
      tr.append(cell);
    });
    return tr;
  };
  const thead = element("thead");
  thead.append(makeRow(header, "th"));
  const tbody = element("tbody");
  let i = start + 2;
  while (i < lines.length && lines[i].trim() && lines[i].includes("|")) {
    tbody.append(makeRow(splitRow(lines[i]), "td"));
    i += 1;
  }
  const wrap = element("div", "table-wrap");
  const tableElement = element("table");
  tableElement.append(thead, tbody);
  wrap.append(tableElement);
  parent.append(wrap);
  return i;
}

function appendText(parent, text) {
  text.split("\n").forEach((part, index) => {
    if (index > 0) parent.append(element("br"));
    if (part) parent.append(document.createTextNode(part));
  });
}

function safeHref(url) {
  try {
    const parsed = new URL(url, document.baseURI);
    return SAFE_PROTOCOLS.has(parsed.protocol) ? parsed.href : null;
  } catch {
    return null;
  }
}

function link(href, label, { plain = false } = {}) {
  const anchor = element("a");
  anchor.href = href;
  anchor.target = "_blank";
  anchor.rel = "noopener noreferrer nofollow";
  if (plain) anchor.textContent = label;
  else renderInline(label, anchor);
  return anchor;
}

function inlineNode(match) {
  if (match[1] !== undefined) return document.createTextNode(match[1]);
  if (match[3] !== undefined) {
    const code = element("code");
    const body = match[3];
    code.textContent = /^ .*[^ ].* $/s.test(body) ? body.slice(1, -1) : body;
    return code;
  }
  const wrappers = [
    [4, "strong"],
    [5, "strong"],
    [6, "del"],
    [7, "em"],
    [8, "em"],
  ];
  for (const [group, tag] of wrappers) {
    if (match[group] !== undefined) {
      const node = element(tag);
      renderInline(match[group], node);
      return node;
    }
  }
  if (match[9] !== undefined) {
    const href = safeHref(match[10]);
    if (href) return link(href, match[9]);
    const span = element("span");
    renderInline(match[9], span);
    return span;
  }
  const href = safeHref(match[11]);
  return href ? link(href, match[11], { plain: true }) : document.createTextNode(match[11]);
}

function renderInline(text, parent) {
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    appendText(parent, text.slice(last, match.index));
    parent.append(inlineNode(match));
    last = match.index + match[0].length;
  }
  appendText(parent, text.slice(last));
}
