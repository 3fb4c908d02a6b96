"""The production runtime: feed, decisions, durable state, alerts."""
