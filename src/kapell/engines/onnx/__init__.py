"""The ``onnx`` engine: an exported decoder run by ONNX Runtime behind kapell's OpenAI server.

Run it as ``python -m kapell.engines.onnx --model DIR --served-name NAME --port N``, where
``DIR`` holds ``model.onnx`` (see ``scripts/export_onnx.py`` for the inputs and outputs it
takes), ``tokenizer.json``, ``tokenizer_config.json`` and optionally ``config.json`` and
``generation_config.json``: the files of a Hugging Face model directory. It needs neither torch
nor transformers (``pip install 'kapell[onnx]'``), which is why the quickstart uses it.
onnxruntime and tokenizers are imported on the worker thread when the model loads.
"""
