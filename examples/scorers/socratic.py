"""A user scorer for `eval_scorers` / `prefkit eval --scorer`: the Socratic notebook's `combined_score`,
made so that an off-topic question cannot score well.

    eval_scorers: [examples/scorers/socratic.py:combined_score]
    metric_for_best_model: combined_score

A scorer gets one `prefkit.evaluate.Sample` (prompt, reply, chosen, rejected, and `scores`: the builtin
scores of this reply, already computed) and returns a number.
"""


def combined_score(sample):
    """Half for guiding with a question, half for staying on the prompt's subject."""
    asks = sample.reply.rstrip().endswith(("?", "？"))
    return 0.5 * asks + 0.5 * sample.scores["relevance"]
