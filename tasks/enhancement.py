"""ai-enhancement: a clearer portrait from Gemini for missing-person and death alerts.

The core sends the upright photo (EXIF applied, longest side capped, JPEG) with the
prompt, reads the image part of the answer, and writes it as a JPEG that says what it
is: XMP DigitalSourceType "edited with generative AI" and the model, so an altered face
never passes for a photograph. A blocked or image-less answer is permanent; 429 and 5xx
are retried by Prefect (the SDK does not retry), and every call has a timeout.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from media_pipeline.errors import NotConfigured, PermanentError, TransientError, http_status_error
from media_pipeline.imaging import load_upright, save_jpeg, to_srgb
from media_pipeline.settings import GeminiSettings
from media_pipeline.storage import atomic_outputs
from tasks.context import Enhanced, JobInput, JobResult

if TYPE_CHECKING:  # the SDK is imported when a call is made: importing the flow stays fast
    from google import genai
    from google.genai import types

AI_EDITED = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
BLOCKED_FINISH_REASONS = {
    "IMAGE_SAFETY",
    "NO_IMAGE",
    "SAFETY",
    "PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "IMAGE_PROHIBITED_CONTENT",
    "RECITATION",
}


def provenance_xmp(model: str) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        f'Iptc4xmpExt:DigitalSourceType="{AI_EDITED}" '
        f'xmp:CreatorTool="media-pipeline ai-enhancement ({model})">'
        '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
        f"Portrait enhanced by generative AI ({model}); not an unaltered photograph"
        "</rdf:li></rdf:Alt></dc:description></rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def upright_jpeg(source: Path, max_side: int, max_pixels: int) -> bytes:
    """The photo as people see it, at most ``max_side`` px long, as JPEG bytes."""
    picture = load_upright(source, (max_side, max_side), max_pixels).picture
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def enhance_portrait(
    source: Path,
    target: Path,
    client: genai.Client,
    *,
    model: str,
    prompt: str,
    max_side: int = 2048,
    quality: int = 90,
    max_pixels: int = 89_478_485,
    before_call: Callable[[], None] = lambda: None,
) -> Enhanced:
    photo = upright_jpeg(source, max_side, max_pixels)
    before_call()
    response = call_gemini(client, model, prompt, photo)
    image_bytes = image_from_response(response, source.name)
    try:
        with Image.open(io.BytesIO(image_bytes)) as answer:
            picture = to_srgb(answer.convert("RGBA") if "A" in answer.mode else answer, None)
            picture = picture.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise TransientError(f"Gemini returned an unreadable image ({exc})") from None
    with atomic_outputs(target) as (temp,):
        save_jpeg(picture, temp, quality, xmp=provenance_xmp(model))
        size = temp.stat().st_size
    metadata = response.usage_metadata
    usage = metadata.model_dump(exclude_none=True, mode="json") if metadata else {}
    return Enhanced(target, picture.width, picture.height, size, model, usage)


def call_gemini(
    client: genai.Client, model: str, prompt: str, photo: bytes
) -> types.GenerateContentResponse:
    import httpx
    import httpx2
    from google.genai import errors as genai_errors
    from google.genai import types

    try:
        return client.models.generate_content(
            model=model,
            contents=[types.Part.from_bytes(data=photo, mime_type="image/jpeg"), prompt],
            config=types.GenerateContentConfig(response_modalities=["IMAGE", "TEXT"]),
        )
    except genai_errors.APIError as exc:
        headers = getattr(exc.response, "headers", None) or {}
        raise http_status_error("Gemini", exc.code or 500, headers, exc.message or "") from None
    except (httpx.TimeoutException, httpx2.TimeoutException):
        raise TransientError("Gemini did not answer in time (timeout)") from None
    except (httpx.TransportError, httpx2.TransportError) as exc:
        raise TransientError(f"cannot reach Gemini ({exc})") from None


def image_from_response(response: types.GenerateContentResponse, name: str) -> bytes:
    """The answer's image bytes, or a permanent error quoting why there is none."""
    if not response.candidates:
        feedback = response.prompt_feedback
        reason = feedback.block_reason if feedback and feedback.block_reason else "no candidates"
        raise PermanentError(f"{name}: Gemini blocked the request ({reason}); not retried")
    candidate = response.candidates[0]
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    for part in parts:
        if part.inline_data and part.inline_data.data:
            return part.inline_data.data
    finish = candidate.finish_reason.value if candidate.finish_reason else "unknown"
    text = " ".join(p.text for p in parts if p.text)[:200]
    if finish in BLOCKED_FINISH_REASONS:
        raise PermanentError(f"{name}: Gemini withheld the image ({finish}); not retried")
    raise PermanentError(
        f"{name}: Gemini answered without an image (finish {finish}: {text!r}); not retried"
    )


def gemini_client(settings: GeminiSettings) -> genai.Client:
    from google import genai
    from google.genai import types

    http = types.HttpOptions(
        base_url=settings.base_url or None,
        timeout=int(settings.gemini_timeout_seconds * 1000),  # milliseconds
    )
    if settings.use_vertexai:
        if not (settings.project and settings.location):
            raise NotConfigured(
                "Vertex AI needs GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION "
                "(GOOGLE_GENAI_USE_VERTEXAI is set)"
            )
        return genai.Client(
            vertexai=True, project=settings.project, location=settings.location, http_options=http
        )
    if not settings.api_key.get_secret_value():
        raise NotConfigured(
            "Gemini is not configured: set GEMINI_API_KEY, or GOOGLE_GENAI_USE_VERTEXAI=true "
            "with GOOGLE_CLOUD_PROJECT and GOOGLE_CLOUD_LOCATION"
        )
    return genai.Client(api_key=settings.api_key.get_secret_value(), http_options=http)


def enhance_media(job: JobInput) -> JobResult:
    """The job: the enhanced portrait beside the original (``{media_id}-enhanced.jpg``)."""
    settings = job.settings
    enhanced = enhance_portrait(
        job.original,
        job.folder / f"{job.media_id}-enhanced.jpg",
        gemini_client(settings.gemini),
        model=settings.gemini.enhancement_model,
        prompt=settings.gemini.enhancement_prompt,
        max_side=settings.gemini.enhancement_max_side,
        max_pixels=settings.images.max_pixels,
        before_call=job.before_call,
    )
    return JobResult(enhanced=enhanced, estimated_cost=settings.gemini.enhancement_price_per_image)
