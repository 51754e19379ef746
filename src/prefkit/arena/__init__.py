"""The arena: people judge two unnamed models' replies side by side, and their votes become figures and
data. ``votes`` is the votes file (append-only, synced); ``battles`` the open battles and which pair of
models answers next; ``prompts`` the prompts a server draws from; ``stats`` win rates and the checks on
the voters; ``ratings`` the Bradley-Terry fit and its intervals; ``design`` how many votes a difference
needs; ``report`` the terminal table and the plot; ``export`` the decisive votes as preference pairs.
The HTTP side is :mod:`prefkit.serve.arena` (and ``arena_replies``), the page's tab
``ui/static/arena.js``.

May import: infer (prompt files), data and what they stand on."""
