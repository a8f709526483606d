"""The durable deploy pipeline: webhooks in, jobs queued, one worker per app."""
