// Server-sent events read with fetch(): EventSource cannot send the Authorization header.
// Reconnects after a dropped connection with Last-Event-ID, so no event is missed or
// repeated; stops when the server ends the stream (the job ended) or `signal` aborts.

import { authHeaders } from "./api.js";

function parse(block) {
  const event = { id: null, type: "message", data: "" };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const at = line.indexOf(":");
    const name = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    if (name === "id") event.id = value;
    else if (name === "event") event.type = value;
    else if (name === "data") data.push(value);
  }
  if (!data.length) return null;
  event.data = data.join("\n");
  return event;
}

export async function follow(path, { onEvent, onEnd, onError, signal }) {
  let last = null;
  let delay = 500;
  while (!signal.aborted) {
    try {
      const headers = { ...authHeaders(), Accept: "text/event-stream" };
      if (last) headers["Last-Event-ID"] = last;
      const response = await fetch(path, { headers, signal });
      if (!response.ok) {
        onError?.(response.status);
        if (response.status < 500 && response.status !== 429) return;
      } else {
        delay = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n?/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const event = parse(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
            if (event) {
              if (event.id) last = event.id;
              onEvent(event);
            }
          }
        }
        onEnd?.();
        return; // the server ended it: the job is over
      }
    } catch (err) {
      if (signal.aborted) return;
      onError?.(err);
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10_000);
  }
}
