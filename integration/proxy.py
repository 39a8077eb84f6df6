#!/usr/bin/env python3
"""A misbehaving HTTP proxy for the peer fault tests: proxy.py TARGET MODE [SECONDS].

MODE is `corrupt` (flips one byte in the middle of every NAR body), `delay` (waits SECONDS
before answering anything) or `pass`. Prints the port it listens on (127.0.0.1), then serves.
"""

import http.server
import sys
import time
import urllib.error
import urllib.request

TARGET, MODE = sys.argv[1].rstrip("/"), sys.argv[2]
DELAY = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.forward("GET")

    def do_HEAD(self):
        self.forward("HEAD")

    def forward(self, method):
        if MODE == "delay":
            time.sleep(DELAY)
        try:
            request = urllib.request.Request(TARGET + self.path, method=method)
            with urllib.request.urlopen(request) as resp:
                status, body, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, body, ctype = e.code, e.read(), "text/plain"
        if MODE == "corrupt" and self.path.startswith("/nar/") and status == 200 and body:
            body = bytearray(body)
            body[len(body) // 2] ^= 0x01
            body = bytes(body)
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method == "GET":
            self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
