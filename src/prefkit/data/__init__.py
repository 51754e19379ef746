"""Data: files -> records -> examples -> checks -> tokens -> batches. ``sources`` finds the files a config
names; ``readers`` and ``formats`` turn records into examples (one reader per file type, one format per
record shape); ``validate`` checks them, naming file and line; ``tokenize`` renders them with the chat
template and masks the prompt; ``collate`` builds batches in every layout (padded, shared prompt, packed);
``load`` wires it together for a run (``prepare_data``) and for `prefkit data check`; ``reuse`` lets a
sweep's runs in one process prepare the same data once.

May import: config (and :mod:`prefkit.errors`, :mod:`prefkit.env`, :mod:`prefkit.builtin`)."""
