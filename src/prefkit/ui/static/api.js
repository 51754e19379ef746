// The server's two APIs, both behind the same key: /ui/api (runs, the arena) and /v1 (OpenAI-compatible
// chat).
// The key is kept in sessionStorage (this tab only) and sent as "Authorization: Bearer KEY" -- with
// fetch, also for streams (EventSource cannot send headers, so none is used).

const KEY = "prefkit.apiKey";

export class AuthError extends Error {}

export class ApiError extends Error {
  constructor(status, message, code = null) {
    super(message);
    this.status = status;
    this.code = code; // the error body's "code" (not_found, already_voted, ...), when it has one
  }
}

export const apiKey = () => sessionStorage.getItem(KEY);
export const setApiKey = (key) => sessionStorage.setItem(KEY, key);
export const forgetApiKey = () => sessionStorage.removeItem(KEY);

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

function codeOf(body) {
  return body && body.error && typeof body.error.code === "string" ? body.error.code : null;
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
  if (!response.ok) throw new ApiError(response.status, messageOf(body) || `HTTP ${response.status}`, codeOf(body));
  return body;
}

export async function getJSON(path, signal) {
  const response = await fetch(path, { headers: headers(), cache: "no-store", signal });
  return check(response);
}

// A JSON body, as the server wants every POST (it refuses any other Content-Type with 415).
function post(path, body, signal) {
  return fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
    cache: "no-store",
    signal,
  });
}

export async function postJSON(path, body, signal) {
  return check(await post(path, body, signal));
}

// POST a JSON body whose answer is a server-sent-event stream; calls onEvent(object) for each "data:"
// event's JSON and resolves at "data: [DONE]" (or when the server closes the stream). An error before the
// stream starts is the usual ApiError/AuthError; an {"error": {...}} event in the stream throws ApiError.
// The events are read off the response body itself: EventSource cannot POST or send the key header.
export async function postStream(path, body, onEvent, signal) {
  const response = await post(path, body, signal);
  if (!response.ok) await check(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue; // comments (": keep-alive"), event names, ids
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const parsed = JSON.parse(data);
        if (parsed.error) throw new ApiError(500, parsed.error.message || "generation failed", parsed.error.code || null);
        onEvent(parsed);
      }
    }
  }
}

// POST /v1/chat/completions with stream: true; calls onText(piece) as each piece of the reply arrives
// and resolves with the finish reason.
export async function streamChat(body, onText, signal) {
  let finish = null;
  await postStream("v1/chat/completions", { ...body, stream: true }, (chunk) => {
    const choice = chunk.choices && chunk.choices[0];
    if (choice && choice.delta && choice.delta.content) onText(choice.delta.content);
    if (choice && choice.finish_reason) finish = choice.finish_reason;
  }, signal);
  return finish;
}
