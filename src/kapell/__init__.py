"""kapell: an AI orchestrator. One declarative spec for LLM serving and training."""

__version__ = "0.1.0"
