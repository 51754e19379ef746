"""HTTP pieces the web page (:mod:`prefkit.ui`) and the API server (:mod:`prefkit.serve`) share: the API
key check, errors in OpenAI's shape, and the guard that keeps web pages in a browser from using a
server meant for local programs (Host check, JSON-only bodies).

May import nothing of prefkit but :mod:`prefkit.errors`."""
