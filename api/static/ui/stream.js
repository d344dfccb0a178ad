// The tenant's event stream, GET /v1/stream, as a WebSocket. A browser's WebSocket cannot
// send the Authorization header, so the key goes as a subprotocol, `crewq.bearer.<key>`,
// beside `crewq.v1`, the one the server chooses (it never echoes the key back). Reconnects
// with backoff after a close, resuming after the last event received so that none is
// missed; `onState("live", {resumed})` says whether it did (false: start over from a
// fresh read), `onState("down")` that it is away and retrying.

import { session } from "./api.js";

export const PROTOCOL = "crewq.v1";
const KEY_PROTOCOL = "crewq.bearer.";
const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 30_000;

// `query`: the stream's filters (`types`, `crew`); returns what stops it.
export function followTenant(query, { onEvent, onState }) {
  let socket = null;
  let last = null;
  let delay = FIRST_DELAY_MS;
  let timer = 0;
  let stopped = false;

  function retry() {
    onState("down");
    timer = setTimeout(connect, delay);
    delay = Math.min(delay * 2, MAX_DELAY_MS);
  }

  function connect() {
    const params = new URLSearchParams(query);
    const resuming = last !== null;
    if (resuming) params.set("after", last);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let opened = false;
    try {
      socket = new WebSocket(`${scheme}//${location.host}/v1/stream?${params}`, [
        PROTOCOL,
        KEY_PROTOCOL + session.key(),
      ]);
    } catch {
      // Not a token the header may carry: no crewq key is like that. Polling goes on.
      onState("down");
      return;
    }
    socket.addEventListener("open", () => {
      opened = true;
      delay = FIRST_DELAY_MS;
      onState("live", { resumed: resuming });
    });
    socket.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      last = event.id;
      onEvent(event);
    });
    socket.addEventListener("close", () => {
      socket = null;
      if (stopped) return;
      // Refused before opening (the event to resume after may be gone, or the server is
      // away): the next try starts from now, and the caller reads afresh when it opens.
      if (!opened) last = null;
      retry();
    });
  }

  connect();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (socket) socket.close(1000);
  };
}
