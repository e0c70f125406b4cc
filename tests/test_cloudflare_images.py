"""Cloudflare takes images only as data URIs: http(s) images are inlined, capped.

A real local HTTP server serves the images; a real cluster shows a job whose image is too
large for the inline cap routed to another vision target with the reason stated.
"""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.cluster import Cluster, model, provider, write_config
from workers.providers.adapters import adapter_for
from workers.providers.images import ImageInlineError, inline_images

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/tiny.png":
            body, ctype = PNG, "image/png"
        elif self.path == "/big.png":
            body, ctype = PNG + b"\0" * 5000, "image/png"
        elif self.path == "/page.html":
            body, ctype = b"<html></html>", "text/html"
        else:
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def images():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _body(url: str) -> dict:
    return {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]}


def test_cloudflare_inlines_an_http_image_as_a_data_uri(images: str) -> None:
    body = _body(f"{images}/tiny.png")
    out = adapter_for("cloudflare").prepare(body, "@cf/meta/llama-4-scout-17b-16e-instruct", 64)
    url = out["messages"][0]["content"][1]["image_url"]["url"]
    assert url == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert body["messages"][0]["content"][1]["image_url"]["url"].startswith("http")  # a copy
    assert out["max_tokens"] == 64 and out["model"].startswith("@cf/")
    # Other providers pass URLs through untouched.
    assert adapter_for("groq").prepare(body, "m", 8)["messages"] == body["messages"]


def test_data_uris_and_text_need_no_fetch() -> None:
    body = _body("data:image/png;base64,AAAA")
    assert inline_images(body) is body
    assert inline_images({"messages": [{"role": "user", "content": "hi"}]})["messages"]


@pytest.mark.parametrize(("path", "message"), [
    ("/big.png", "exceeds the 1,000-byte inline cap"),
    ("/page.html", "content-type text/html is not an image"),
    ("/missing.png", "HTTP 404"),
])
def test_images_that_cannot_be_inlined_say_why(images: str, path: str, message: str) -> None:
    with pytest.raises(ImageInlineError, match=message):
        inline_images(_body(f"{images}{path}"), max_bytes=1000)


def test_too_large_image_routes_to_another_vision_target(images: str, tmp_path: Path) -> None:
    import json

    providers = {
        "cloudflare": provider(model("@cf/scout", vision=True,
                                     neurons={"input_per_million": 1, "output_per_million": 1}),
                               dialect="cloudflare",
                               limits=[{"unit": "neurons", "limit": 10000, "per": "day"}]),
        "b": provider(model("vis", vision=True)),
    }
    cfg_dir = write_config(tmp_path / "cfg", providers,
                           {"vision": ["cloudflare/@cf/scout", "b/vis"]},
                           settings={"catalog": {"inline_image_max_bytes": 1000}})
    line = json.dumps({"custom_id": "img", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "vision", "max_tokens": 16,
                                **_body(f"{images}/big.png")}})
    small = json.dumps({"custom_id": "small", "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": "vision", "max_tokens": 16,
                                 **_body(f"{images}/tiny.png")}})
    with Cluster(cfg_dir, tmp_path) as cluster:
        cluster.start_worker("--all", name="w")
        lines = cluster.wait(cluster.submit([line, small]), timeout=90)
        assert lines[0]["dispatch"]["provider"] == "b"          # routed past Cloudflare
        assert lines[1]["dispatch"]["provider"] == "cloudflare"  # inlined and served there
        assert cluster.stats()["targets"]["cloudflare/@cf/scout"]["received"] == 1
        assert "exceeds the 1,000-byte inline cap" in cluster.log("w")
