"""OpenSSL's OCSP responder on loopback only (`openssl ocsp -port` listens on every
interface): each POSTed request is answered by `openssl ocsp -reqin ... -respout ...` over
the CA directory's index, so the answer is OpenSSL's, nonce and all.

Usage: ocsp_http.py PORT CA_DIR [MODE]

MODE plays an attacker on the path: `trylater` answers every request with the unsigned
"try later" status; a file name answers with that fixed (earlier captured) response.
"""
import http.server
import os
import subprocess
import sys
import tempfile

port, ca_dir = int(sys.argv[1]), sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else None
TRY_LATER = bytes([0x30, 0x03, 0x0A, 0x01, 0x03])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(min(length, 65536))
        if mode == "trylater":
            return self.answer(TRY_LATER)
        if mode:
            with open(os.path.join(ca_dir, mode), "rb") as f:
                return self.answer(f.read())
        with tempfile.TemporaryDirectory() as tmp:
            req, resp = os.path.join(tmp, "req.der"), os.path.join(tmp, "resp.der")
            with open(req, "wb") as f:
                f.write(body)
            done = subprocess.run(
                ["openssl", "ocsp", "-index", "index.txt", "-CA", "ca.pem",
                 "-rsigner", "responder.pem", "-rkey", "responder.key",
                 "-reqin", req, "-respout", resp, "-nmin", "5"],
                cwd=ca_dir, capture_output=True,
            )
            if done.returncode != 0 or not os.path.exists(resp):
                self.send_response(500)
                self.end_headers()
                return
            with open(resp, "rb") as f:
                self.answer(f.read())

    def answer(self, answer):
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
