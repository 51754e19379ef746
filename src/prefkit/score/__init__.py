"""Scoring replies: text normalisation and languages, reference overlap (ROUGE-L, BLEU), relevance,
the scorers a config names, the per-reply flags and per-language guards that catch a score rising while
replies get worse, and generating + scoring a set of replies. Used by training (generation during
evaluation), by :mod:`prefkit.evaluate` and by the quickstart.

May import: config, data, model, infer."""
