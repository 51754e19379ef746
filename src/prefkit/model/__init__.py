"""Models: where a model comes from and how it is loaded. :mod:`prefkit.model.loader` is the one place a
causal LM or a tokenizer is loaded, so precision, device, attention and quantisation are decided once for
training, evaluation, the quickstart, chat, generation, serving and export."""
