"""Models: where a model comes from (``sources``: builtin alias, folder, .gguf, hub id) and how it is
loaded. :mod:`~prefkit.model.loader` is the one place a causal LM or a tokenizer is loaded, and the one
precision rule, so precision, device, attention and quantisation are decided once for training,
evaluation, the quickstart, chat, generation, serving and export; ``adapters`` loads LoRA adapters for
all of them; ``training`` and ``inference`` put together what each side needs (the reference; the chat
encoders). Also the per-sequence log-probs every loss and metric reads (``logps``) and the kernels under
them: the one chunked log-softmax, the fused output layer, the lean LoRA forward, CPU attention under a
ready-made mask.

May import: config, data."""
