-- W3C trace context carried from the submitting request to the worker and the webhooks.
ALTER TABLE jobs ADD COLUMN traceparent text;
ALTER TABLE events ADD COLUMN traceparent text;
