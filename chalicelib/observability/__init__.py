"""What every function tells its operator: one JSON log line per request or event, and CloudWatch
metrics (EMF) per environment, through AWS Lambda Powertools (Logger, Metrics).

The code reports through three calls of `context` that import nothing heavy:

    from chalicelib.observability import context as observability

    with observability.invocation("event", "batch_job_events"):   # one log line when it ends
        observability.annotate(jobId=..., consumer=..., outcome=...)  # fields of that line
        observability.record("JobsEnded", environment=env, status="70")  # a metric, per environment

Powertools itself (about 20-40 ms of imports, `make bench`) is imported when the first line or
metric is written, never by `import app`: a cold start that serves `/` or a nonce pays it after
its work, and only once per container.

Only the fields of `context.LOGGED_FIELDS` ever reach a line, each a short scalar: no request
parameter, body, header, signature, token, key or decrypted URL can (tests/observability).
"""
