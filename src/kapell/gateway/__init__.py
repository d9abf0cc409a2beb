"""The OpenAI-compatible data plane: routing, activator, auth, metering."""
