// The server's two APIs, both behind the same key: /ui/api (runs) and /v1 (OpenAI-compatible chat).
// The key is kept in sessionStorage (this tab only) and sent as "Authorization: Bearer KEY" -- with
// fetch, also for streams (EventSource cannot send headers, so none is used).

const KEY = "prefkit.apiKey";

export class AuthError extends Error {}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const apiKey = () => sessionStorage.getItem(KEY);
export const setApiKey = (key) => sessionStorage.setItem(KEY, key);
export const forgetApiKey = () => sessionStorage.removeItem(KEY);

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

function messageOf(body) {
  if (body && body.error && typeof body.error.message === "string") return body.error.message;
  if (body && typeof body.detail === "string") return body.detail;
  return null;
}

async function check(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (response.status === 401) throw new AuthError(messageOf(body) || "This server needs its API key.");
  if (!response.ok) throw new ApiError(response.status, messageOf(body) || `HTTP ${response.status}`);
  return body;
}

export async function getJSON(path, signal) {
  const response = await fetch(path, { headers: headers(), cache: "no-store", signal });
  return check(response);
}

// POST /v1/chat/completions with stream: true; calls onText(piece) as each piece of the reply arrives
// and resolves with the finish reason. Reads the server-sent events off the response body itself.
export async function streamChat(body, onText, signal) {
  const response = await fetch("v1/chat/completions", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!response.ok) await check(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return finish;
    buffer += value.replaceAll("\r\n", "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return finish;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new ApiError(500, chunk.error.message || "generation failed");
        const choice = chunk.choices && chunk.choices[0];
        if (choice && choice.delta && choice.delta.content) onText(choice.delta.content);
        if (choice && choice.finish_reason) finish = choice.finish_reason;
      }
    }
  }
}
