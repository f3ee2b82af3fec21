"""The paid AI providers: OpenAI (transcription) and Gemini (enhancement)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from media_pipeline.settings.base import Group


class OpenAISettings(Group):
    api_key: SecretStr = Field(
        SecretStr(""), validation_alias="OPENAI_API_KEY", description="OpenAI API key"
    )
    base_url: str = Field(
        "",
        validation_alias="OPENAI_BASE_URL",
        description="OpenAI-compatible endpoint; empty: api.openai.com",
    )
    transcription_model: str = Field("whisper-1", description="Speech-to-text model")
    transcription_language: str = Field("", description="Language hint (ISO-639-1), optional")
    openai_timeout_seconds: float = Field(120, gt=0, description="Timeout of one API call")
    transcription_price_per_minute: float = Field(
        0.006, ge=0, description="USD per audio minute, for the cost estimate"
    )
    transcription_max_upload_bytes: int = Field(
        24 * 1024 * 1024, gt=0, description="Largest upload to the API (its limit: 25 MB)"
    )
    transcription_max_chunk_seconds: float = Field(
        1200, gt=0, description="Longest audio sent in one call; longer audio is split"
    )


DEFAULT_ENHANCEMENT_PROMPT = (
    "Enhance this portrait photograph for a missing-person or memorial notice. Keep the "
    "person's identity exactly: same face, features, age, expression, hairstyle and "
    "clothing. Do not add, remove or move any object or person. Keep natural skin texture; "
    "no beautification or make-up. Fix blur, noise, compression artefacts, lighting and "
    "colour balance so the person is clearly recognisable. Return a single photograph."
)


class GeminiSettings(Group):
    api_key: SecretStr = Field(
        SecretStr(""), validation_alias="GEMINI_API_KEY", description="Gemini Developer API key"
    )
    base_url: str = Field(
        "", validation_alias="GEMINI_BASE_URL", description="Gemini endpoint; empty: Google's"
    )
    use_vertexai: bool = Field(
        False, validation_alias="GOOGLE_GENAI_USE_VERTEXAI", description="Use Vertex AI"
    )
    project: str = Field("", validation_alias="GOOGLE_CLOUD_PROJECT", description="Vertex project")
    location: str = Field(
        "", validation_alias="GOOGLE_CLOUD_LOCATION", description="Vertex location"
    )
    enhancement_model: str = Field("gemini-2.5-flash-image", description="Image model")
    enhancement_categories: list[str] = Field(
        ["DISP", "DECD"], description="Alert categories whose photos are enhanced"
    )
    enhancement_prompt: str = Field(DEFAULT_ENHANCEMENT_PROMPT, description="Enhancement prompt")
    enhancement_max_side: int = Field(2048, gt=0, description="Longest side sent to the model")
    gemini_timeout_seconds: float = Field(90, gt=0, description="Timeout of one API call")
    enhancement_price_per_image: float = Field(
        0.039, ge=0, description="USD per generated image, for the cost estimate"
    )
