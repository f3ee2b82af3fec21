"""The media.processed webhook as a receiver checks it (Standard Webhooks), and its schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from flows.notifications import webhook_request
from media_pipeline.enums import JobState, MediaStatus, MediaType
from media_pipeline.payloads import JobSummary, MediaSummary, OutputRecord

SUMMARY = MediaSummary(
    media_id="6f1c7e9a-1111-4222-8333-944455556666",
    alert_id="7a2d8f0b-2222-4333-8444-a55566667777",
    type=MediaType.IMAGE,
    status=MediaStatus.READY,
    filename="photo.jpg",
    jobs=[
        JobSummary(
            job="generate-thumbnails",
            state=JobState.SUCCEEDED,
            attempts=1,
            outputs=[
                OutputRecord(type="THUMBNAIL", path="a/b.jpg", width=150, height=150, bytes=4000)
            ],
        )
    ],
)


SECRETS = ["a plain shared secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]


@pytest.mark.parametrize("secret", SECRETS)
def test_receivers_verify_the_webhook_and_refuse_replays(secret: str):
    now = datetime.now(UTC)
    body, headers = webhook_request(SUMMARY, "msg_1", secret, now)
    receiver = Webhook(secret if secret.startswith("whsec_") else secret.encode())

    message = receiver.verify(body, headers)
    assert message["type"] == "media.processed"
    assert MediaSummary.model_validate(message["data"]) == SUMMARY
    assert headers["webhook-id"] == "msg_1"

    tampered = body.replace(b"READY", b"FAILED")
    with pytest.raises(WebhookVerificationError):
        receiver.verify(tampered, headers)
    old_body, old_headers = webhook_request(SUMMARY, "msg_1", secret, now - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError, match="too old"):
        receiver.verify(old_body, old_headers)  # a captured callback replayed later


def test_the_summary_has_a_json_schema_receivers_can_read():
    schema = MediaSummary.model_json_schema()
    assert {"media_id", "alert_id", "type", "status", "jobs"} <= set(schema["properties"])
    assert {"media_id", "alert_id", "type", "status"} <= set(schema["required"])
    assert json.loads(json.dumps(schema))  # plain JSON
