// Knowledge bases on the server's OpenAI API: a knowledge base is a vector store (/v1/vector_stores), its
// documents are files uploaded with /v1/files (purpose "assistants") and then added to the store, which reads
// and indexes them in the background (status in_progress -> completed or failed with last_error).

import { ApiError, callJson, errorFromText, headers } from "./api.js";

const PAGE = 100;
const id = (value) => encodeURIComponent(value);

/** Every page of a list route (OpenAI's after/has_more paging), oldest first when order is "asc". */
async function listAll(url, apiKey, order = "desc") {
  const items = [];
  let after = null;
  for (;;) {
    const query = new URLSearchParams({ limit: String(PAGE), order });
    if (after) query.set("after", after);
    const page = await callJson("GET", `${url}?${query}`, { apiKey });
    items.push(...(page.data ?? []));
    if (!page.has_more || !page.last_id) return items;
    after = page.last_id;
  }
}

/** The caller's knowledge bases (vector stores), newest first. */
export function listKnowledgeBases(apiKey) {
  return listAll("v1/vector_stores", apiKey);
}

/** Create an empty knowledge base called name. */
export function createKnowledgeBase(name, apiKey) {
  return callJson("POST", "v1/vector_stores", { apiKey, body: { name } });
}

/** Delete a knowledge base (its chunks and file links; the uploaded files are deleted separately). */
export function deleteKnowledgeBase(storeId, apiKey) {
  return callJson("DELETE", `v1/vector_stores/${id(storeId)}`, { apiKey });
}

/** The files of a knowledge base with their processing status, oldest first. */
export function listKnowledgeBaseFiles(storeId, apiKey) {
  return listAll(`v1/vector_stores/${id(storeId)}/files`, apiKey, "asc");
}

/** Add an uploaded file to a knowledge base (the server reads it in the background). */
export function addFile(storeId, fileId, apiKey) {
  return callJson("POST", `v1/vector_stores/${id(storeId)}/files`, { apiKey, body: { file_id: fileId } });
}

/** Take a file out of a knowledge base. */
export function removeFile(storeId, fileId, apiKey) {
  return callJson("DELETE", `v1/vector_stores/${id(storeId)}/files/${id(fileId)}`, { apiKey });
}

/** The caller's uploaded documents by id: {filename, bytes}. */
export async function uploadedFiles(apiKey) {
  const body = await callJson("GET", "v1/files?purpose=assistants", { apiKey });
  return new Map((body.data ?? []).map((file) => [String(file.id), { filename: String(file.filename ?? ""),
                                                                      bytes: Number(file.bytes) || 0 }]));
}

/** Delete an uploaded file; true when deleted or already gone. */
export async function deleteUploadedFile(fileId, apiKey) {
  try {
    await callJson("DELETE", `v1/files/${id(fileId)}`, { apiKey });
    return true;
  } catch (error) {
    return error.status === 404;
  }
}

/**
 * Upload one File to /v1/files (multipart, purpose "assistants") with XMLHttpRequest, whose upload events
 * report progress: onProgress(loaded, total). Resolves to the file object; rejects with ApiError.
 */
export function uploadFile(file, { apiKey, onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "v1/files");
    for (const [name, value] of Object.entries(headers(apiKey, true))) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress?.(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch {
          reject(new ApiError("server", { status: xhr.status, detail: xhr.responseText.slice(0, 300) }));
        }
      } else {
        reject(errorFromText(xhr.status, xhr.responseText, xhr.getResponseHeader("Retry-After")));
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError("network")));
    xhr.addEventListener("abort", () => reject(new DOMException("upload aborted", "AbortError")));
    signal?.addEventListener("abort", () => xhr.abort(), { once: true });
    const form = new FormData();
    form.append("purpose", "assistants");
    form.append("file", file, file.name);
    xhr.send(form);
  });
}
