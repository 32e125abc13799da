-- The vendor half of the W3C trace context, carried with traceparent from
-- the submitting request to the worker.
ALTER TABLE jobs ADD COLUMN tracestate text;

-- The age of the oldest job still waiting, read by every worker replica
-- every few seconds for the queue-age alert: an index, not a scan.
CREATE INDEX jobs_queued_since ON jobs (created_at) WHERE status = 'queued';
