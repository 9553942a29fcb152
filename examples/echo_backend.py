"""A tiny echo backend for the demo: answers every request with the path and the request
headers it received, as JSON, so you can see what the gateway's plugins added or removed."""
import http.server
import json
import sys


class Echo(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"path": self.path, "headers": dict(self.headers)}, indent=1).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


port = int(sys.argv[1]) if len(sys.argv) > 1 else 18080
http.server.ThreadingHTTPServer(("127.0.0.1", port), Echo).serve_forever()
