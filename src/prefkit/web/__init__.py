"""HTTP pieces the web page (:mod:`prefkit.ui`) and the API server (:mod:`prefkit.serve`) share: the API
key check and errors in OpenAI's shape.

May import nothing of prefkit but :mod:`prefkit.errors`."""
