"""A loopback HTTP file server for download tests (no network needed)."""
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """Serves the files under `folder` on 127.0.0.1, at `url`/<path relative to folder>.

    `ranges`: answer Range requests with 206 and the rest of the file (True), or ignore them and
    send the whole file with 200 (False). `cut_once[name] = n`: the next response for `name`
    announces its full length but sends only n bytes, then closes. `requests` records
    (name, Range header) for each request.
    """

    def __init__(self, folder):
        self.folder = folder
        self.ranges = True
        self.cut_once = {}
        self.requests = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def publish(self, name, body):
        """Serve `body` as `name` (a path that may contain folders); return its address."""
        path = os.path.join(self.folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(body)
        return f"{self.url}/{name}"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                byte_range = self.headers.get("Range")
                server.requests.append((name, byte_range))
                path = os.path.join(server.folder, name)
                if not os.path.isfile(path):
                    self.send_error(404)
                    return
                with open(path, "rb") as f:
                    data = f.read()
                partial = server.ranges and byte_range is not None
                start = int(byte_range.split("=")[1].split("-")[0]) if partial else 0
                if start >= len(data) > 0:
                    self.send_error(416)
                    return
                self.send_response(206 if partial else 200)
                if partial:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                cut = server.cut_once.pop(name, None)
                self.wfile.write(data[start:] if cut is None else data[start:start + cut])
                self.close_connection = True

            def log_message(self, *args):
                pass

        return Handler

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_folder(folder, monkeypatch):
    """Body of a pytest fixture: a FileServer on `folder`, closed after the test. Proxy settings
    are removed so that requests to 127.0.0.1 reach it."""
    for variable in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    server = FileServer(str(folder))
    yield server
    server.close()
