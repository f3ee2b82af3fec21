"""A local HTTP server speaking OpenAI's and Gemini's wire formats, for the real SDKs.

Requests are checked and recorded; answers are canned but realistic. A script of
faults (status codes with headers, delays, blocked or text-only answers) can be queued
per endpoint: each request takes the next entry, then normal answers resume.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import av
from PIL import Image


@dataclass
class Fault:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: dict[str, Any] | None = None
    message: str | None = None


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    fields: dict[str, str]
    files: dict[str, bytes]
    json: dict[str, Any] | None = None
    received: float = field(default_factory=time.time)  # when the request arrived


def audio_duration(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = sum(frame.samples for frame in container.decode(stream))
        return frames / stream.codec_context.sample_rate


def transcription_body(fields: dict[str, str], duration: float, phrase: str = "") -> dict[str, Any]:
    segments, start, index = [], 0.0, 0
    while start < duration - 1e-6:
        end = min(duration, start + 5.0)
        segments.append(
            {
                "id": index,
                "seek": 0,
                "start": round(start, 2),
                "end": round(end, 2),
                "text": f" Segment {index} of the voice note{phrase}.",
                "tokens": [1, 2],
                "temperature": 0.0,
                "avg_logprob": -0.2,
                "compression_ratio": 1.1,
                "no_speech_prob": 0.01,
            }
        )
        start, index = end, index + 1
    text = "".join(s["text"] for s in segments).strip() or ""
    if fields.get("response_format") == "verbose_json":
        return {
            "task": "transcribe",
            "language": "english",
            "duration": round(duration, 2),
            "text": text,
            "segments": segments,
        }
    return {"text": text}


class FakeProviders:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.faults: dict[str, list[Fault]] = {"openai": [], "gemini": []}
        self.enhanced_image: Image.Image | None = None
        self.latency = 0.0  # seconds every answer without a fault of its own takes
        self.phrase = ""  # said in every segment of every transcription
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeProviders:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def queue(self, provider: str, *faults: Fault) -> None:
        self.faults[provider].extend(faults)

    def calls(self, provider: str) -> list[Recorded]:
        prefix = "/v1/audio" if provider == "openai" else "/v1beta/models"
        return [
            r
            for r in self.requests
            if r.path.startswith(prefix) or (provider == "gemini" and ":generateContent" in r.path)
        ]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if self.path.startswith("/v1/audio/transcriptions"):
                    fake._openai(self, body)
                elif ":generateContent" in self.path:
                    fake._gemini(self, body)
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def _send(
                self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _next_fault(self, provider: str) -> Fault | None:
        return self.faults[provider].pop(0) if self.faults[provider] else None

    def _openai(self, handler: Any, body: bytes) -> None:
        message = BytesParser(policy=HTTP).parsebytes(
            b"content-type: " + handler.headers["content-type"].encode() + b"\r\n\r\n" + body
        )
        fields, files = {}, {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if part.get_filename():
                files[name] = part.get_payload(decode=True)
                fields[f"{name}.filename"] = part.get_filename()
            else:
                fields[name] = part.get_content().strip()
        self.requests.append(
            Recorded(
                handler.path, {k.lower(): v for k, v in handler.headers.items()}, fields, files
            )
        )
        fault = self._next_fault("openai")
        time.sleep(fault.delay if fault else self.latency)
        if fault and fault.status != 200:
            text = fault.message or f"injected {fault.status}"
            error = {"error": {"message": text, "type": "server_error", "code": None}}
            handler._send(fault.status, error, fault.headers)
            return
        if "model" not in fields or "file" not in files:
            handler._send(400, {"error": {"message": "model and file are required"}})
            return
        if not handler.headers.get("authorization", "").startswith("Bearer "):
            handler._send(401, {"error": {"message": "missing API key"}})
            return
        handler._send(200, transcription_body(fields, audio_duration(files["file"]), self.phrase))

    def _gemini(self, handler: Any, body: bytes) -> None:
        request = json.loads(body)
        self.requests.append(
            Recorded(
                handler.path, {k.lower(): v for k, v in handler.headers.items()}, {}, {}, request
            )
        )
        fault = self._next_fault("gemini")
        time.sleep(fault.delay if fault else self.latency)
        if fault and fault.status != 200:
            error = {
                "error": {
                    "code": fault.status,
                    "message": f"injected {fault.status}",
                    "status": "UNAVAILABLE",
                }
            }
            handler._send(fault.status, error, fault.headers)
            return
        if fault and fault.body is not None:
            handler._send(200, fault.body)
            return
        parts = request["contents"][0]["parts"]
        inline = next(p for p in parts if "inlineData" in p or "inline_data" in p)
        data = (inline.get("inlineData") or inline.get("inline_data"))["data"]
        source = Image.open(io.BytesIO(base64.urlsafe_b64decode(data + "==")))
        enhanced = self.enhanced_image or source.convert("RGB").resize(
            (source.width * 3 // 4, source.height * 3 // 4)
        )
        out = io.BytesIO()
        enhanced.save(out, "PNG")
        handler._send(200, gemini_image_answer(base64.b64encode(out.getvalue()).decode()))


def gemini_image_answer(b64_png: str) -> dict[str, Any]:
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Here is the enhanced portrait."},
                        {"inlineData": {"mimeType": "image/png", "data": b64_png}},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 1290,
            "candidatesTokenCount": 1300,
            "totalTokenCount": 2590,
        },
        "modelVersion": "gemini-2.5-flash-image",
    }
