"""The committed OpenAPI document must be the one the code generates (make schema rewrites it)."""

from pathlib import Path

import pytest
from django.core.management import call_command

COMMITTED = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"


def test_committed_schema_matches_the_generated_one(tmp_path):
    generated = tmp_path / "openapi.yaml"
    call_command("spectacular", "--file", str(generated), "--validate", "--fail-on-warn")
    assert COMMITTED.read_text() == generated.read_text(), (
        "docs/openapi.yaml is stale: run `make schema` and commit the result."
    )


@pytest.mark.django_db
def test_schema_is_served(client, admin_user):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert COMMITTED.read_text().encode() == response.content
    client.force_login(admin_user)
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.content
