"""``/api/user/me/`` on PostgreSQL, where production reads it: the held containers' aggregate
and the quota's subquery of today's AI uses give the same answers as on SQLite."""

from __future__ import annotations

from datetime import timedelta

import pytest

from internal_config.models import AIUsageLog
from vm_manager.models import ResourceQuota, utc_day_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def test_me_on_postgres_shows_held_credits_and_todays_ai_uses(api_client, user, make_container):
    make_container(user)
    make_container(user)
    make_container(user, desired_state="stopped")
    ResourceQuota.objects.filter(user=user).update(credits=5, ai_use_per_day=4)
    AIUsageLog.objects.create(user=user, query="today")
    yesterday = AIUsageLog.objects.create(user=user, query="yesterday")
    AIUsageLog.objects.filter(pk=yesterday.pk).update(
        created_at=utc_day_start() - timedelta(seconds=1)
    )

    me = api_client.get("/api/user/me/").json()

    assert me["active_containers"] == 2
    assert me["quota"]["credits_left"] == 3
    assert me["quota"]["ai_uses_left_today"] == 3
    assert me["quota"]["allowed_types"]
