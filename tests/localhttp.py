"""A real HTTP server on 127.0.0.1 for the downloader's tests (no mock, no network)."""

import contextlib
import http.server
import threading


@contextlib.contextmanager
def http_server(handler, on_stop=None, join_timeout=10.0):
    """Serve with ``handler`` (a request handler class) from a thread; yield the base URL.

    ``on_stop`` runs first when the block exits (e.g. to release handlers that
    stall on purpose); the server is then shut down, and its thread joined for
    at most ``join_timeout`` seconds, so no test can hang on it.
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # a short poll interval: shutdown() waits for it, and the tests start many servers
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        if on_stop is not None:
            on_stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=join_timeout)
