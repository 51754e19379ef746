"""Inference: the decode loop every reply goes through (continuous batching over one model with a KV
cache, :mod:`~prefkit.infer.decode`), per-row sampling and stop rules, streaming text, and what is built
on it -- replies to chat prompts (:mod:`~prefkit.infer.generate`), the terminal chat, batch generation to
a file, and export of a merged model.

May import: config, data, model (and :mod:`prefkit.errors`, :mod:`prefkit.env`)."""
