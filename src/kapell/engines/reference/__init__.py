"""The ``reference`` engine: a Hugging Face transformers model behind kapell's OpenAI server.

Run it as ``python -m kapell.engines.reference --model PATH --served-name NAME --port N``.
torch and transformers are imported on the worker thread when the model loads, never by
importing this package.
"""
