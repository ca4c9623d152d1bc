/*
 * One run's live events (DESIGN §4) over Server-Sent Events, for every view that follows a run.
 */
import { API } from "./common.js";

export var EVENT_TYPES = ["run_started", "epoch_end", "progress", "checkpoint_saved", "status", "media", "system",
  "stage_end", "training_complete", "training_failed", "training_stopped"];

/**
 * An EventSource on the run's stream after event `afterId` (0: from the first).
 * handlers: onEvent(event) for each parsed event; onOpen(); onError(closed) — closed is true
 * when the server refused the stream (the browser will not retry), false while it reconnects.
 */
export function openEventStream(runId, afterId, handlers) {
  var query = afterId > 0 ? "?last_event_id=" + encodeURIComponent(String(afterId)) : "";
  var source = new EventSource(API + "/training/" + encodeURIComponent(runId) + "/stream" + query);
  var onMessage = function (message) {
    var event;
    try { event = JSON.parse(message.data); } catch (err) { return; }
    if (event && typeof event === "object") handlers.onEvent(event);
  };
  source.onmessage = onMessage;
  EVENT_TYPES.forEach(function (type) { source.addEventListener(type, onMessage); });
  source.onopen = function () { if (handlers.onOpen) handlers.onOpen(); };
  source.onerror = function () {
    if (handlers.onError) handlers.onError(source.readyState === EventSource.CLOSED);
  };
  return source;
}
