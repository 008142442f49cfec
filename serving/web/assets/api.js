// The page's side of the OpenAI-compatible API: model list, streamed Responses (typed SSE events), deleting
// stored responses, and the mapping of HTTP/OpenAI errors to a few kinds the page explains in plain words.

/** An API failure with a kind the page can explain: network, auth, rate, quota, context, notfound,
 * kbnotfound (a knowledge base that is gone), bad, server or interrupted. detail holds the server's own message when there is one. */
export class ApiError extends Error {
  constructor(kind, { status = 0, detail = "", retryAfter = null, code = "" } = {}) {
    super(detail || kind);
    this.name = "ApiError";
    this.kind = kind;
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
    this.code = code;
  }
}

const CONTEXT_HINT = /context length|context window|maximum context|too long|max_model_len|maximum model length/i;

/** Decide an error's kind from the HTTP status and the OpenAI error object ({message, type, code}). */
export function classifyError(status, error = {}) {
  const code = typeof error.code === "string" ? error.code : "";
  const type = typeof error.type === "string" ? error.type : "";
  const message = typeof error.message === "string" ? error.message : "";
  if (!status && typeof error.code === "number") status = error.code;
  if (code === "insufficient_quota" || type === "insufficient_quota") return "quota";
  if (code === "context_length_exceeded" || (status === 400 && CONTEXT_HINT.test(message))) return "context";
  if (status === 401 || status === 403 || code === "invalid_api_key") return "auth";
  if (status === 429) return "rate";
  if (status === 404 && error.param === "vector_store_id") return "kbnotfound";
  if (status === 404 || code === "model_not_found") return "notfound";
  if (status === 502 || status === 503 || status === 504) return "network";
  if (status >= 500) return "server";
  return "bad";
}

/** Request headers: the key (when there is one) and what we accept. */
export function headers(apiKey, json = false) {
  const result = { Accept: json ? "application/json" : "text/event-stream" };
  if (apiKey) result.Authorization = `Bearer ${apiKey}`;
  return result;
}

async function request(url, init) {
  try {
    return await fetch(url, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("network", { detail: String(error.message || error) });
  }
}

/** The ApiError for a failed answer, from its status, body text and Retry-After header. */
export function errorFromText(status, text, retryAfter = null) {
  let error = {};
  try {
    const body = JSON.parse(text);
    error = body && typeof body.error === "object" && body.error ? body.error : { message: body.detail };
  } catch {
    error = { message: text.slice(0, 300) };
  }
  const retry = Number.parseInt(retryAfter ?? "", 10);
  return new ApiError(classifyError(status, error), {
    status,
    detail: typeof error.message === "string" ? error.message : "",
    retryAfter: Number.isFinite(retry) ? retry : null,
    code: typeof error.code === "string" ? error.code : "",
  });
}

async function errorFromResponse(response) {
  const text = await response.text().catch(() => "");
  return errorFromText(response.status, text, response.headers.get("Retry-After"));
}

/** A JSON API call (method, relative url, optional JSON body); resolves to the parsed answer, throws ApiError. */
export async function callJson(method, url, { apiKey, body, signal } = {}) {
  const init = { method, headers: headers(apiKey, true), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await request(url, init);
  if (!response.ok) throw await errorFromResponse(response);
  return response.json();
}

/** GET v1/models: the served models, LoRA adapters included, as [{id, parent}]. */
export async function listModels(apiKey, signal) {
  const response = await request("v1/models", { headers: headers(apiKey, true), signal });
  if (!response.ok) throw await errorFromResponse(response);
  const body = await response.json();
  return (body.data ?? []).map((model) => ({ id: String(model.id), parent: model.parent ?? null }));
}

/** GET me: who the server takes us to be ({user, organisation, via}); null when it will not say. */
export async function whoAmI(apiKey) {
  try {
    const response = await fetch("me", { headers: headers(apiKey, true) });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

/** Split an SSE body into events: yields {event, data} per blank-line-terminated block. */
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  let name = "";
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        if (error.name === "AbortError") throw error;
        throw new ApiError("interrupted", { detail: String(error.message || error) });
      }
      if (chunk.done) return;
      buffer += decoder.decode(chunk.value, { stream: true });
      const lines = buffer.split("\n");
      buffer = lines.pop();
      for (const rawLine of lines) {
        const line = rawLine.endsWith("\r") ? rawLine.slice(0, -1) : rawLine;
        if (line.startsWith("data:")) {
          data.push(line.slice(5).replace(/^ /, ""));
        } else if (line.startsWith("event:")) {
          name = line.slice(6).trim();
        } else if (line === "" && data.length) {
          const payload = data.join("\n");
          data = [];
          const event = name;
          name = "";
          yield { event, data: payload };
        } else if (line === "") {
          name = "";
        } // comments (": ...") and unknown fields are skipped
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function streamError(error) {
  const detail = String(error?.message ?? "");
  const code = String(error?.code ?? "");
  const status = code === "server_error" || error?.type === "server_error" ? 500 : 0;
  return new ApiError(classifyError(status, error ?? {}), { detail, code });
}

/**
 * POST v1/responses with stream: true and yield each typed event's JSON ({type, ...}) up to and including
 * the last one (response.completed or response.incomplete). response.failed and error events throw; a body
 * that ends before a final event throws "interrupted". Aborting signal stops the download, which makes the
 * server abort the generation.
 */
export async function* streamResponse(body, { apiKey, signal }) {
  const response = await request("v1/responses", {
    method: "POST",
    headers: { ...headers(apiKey), "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!response.ok) throw await errorFromResponse(response);
  for await (const { event: name, data } of sseEvents(response)) {
    if (data === "[DONE]") continue; // not sent by the Responses API; harmless if a proxy adds it
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      throw new ApiError("interrupted", { detail: data.slice(0, 300) });
    }
    const type = event.type ?? name;
    if (type === "error" || (event.error && !event.response)) throw streamError(event.error ?? event);
    if (type === "response.failed") throw streamError(event.response?.error ?? { message: "response.failed" });
    yield { ...event, type };
    if (type === "response.completed" || type === "response.incomplete") return;
  }
  // The body ended without a final event: the server went away mid-answer.
  throw new ApiError("interrupted");
}

/** DELETE v1/responses/{id}: forget a stored response. True when deleted or already gone. */
export async function deleteResponse(id, apiKey) {
  try {
    const response = await fetch(`v1/responses/${encodeURIComponent(id)}`, {
      method: "DELETE",
      headers: headers(apiKey, true),
    });
    return response.ok || response.status === 404;
  } catch {
    return false;
  }
}
