"""A run folder from start to finish: the marker that makes a folder prefkit's own (:mod:`~.folder`),
the lock, pre-flight checks, how a run starts (fresh, resumed, finished or refused: :mod:`~.start`),
whether a checkpoint may be resumed, atomic checkpoints, the metrics log and plots, a clean stop on
SIGINT/SIGTERM, and the crash-safe finish.

May import: config, data, model (and :mod:`prefkit.errors`, :mod:`prefkit.env`)."""
