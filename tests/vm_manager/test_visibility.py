import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from vm_manager.errors import ContainerMissing, ContainerNotVisible
from vm_manager.models import Team, TeamMembership, can_view_container, visible_containers_for
from vm_manager.selectors import live_visible_container


def test_owner_sees_own_containers_only(user, other_user, make_container):
    mine = make_container(user)
    make_container(other_user)

    assert list(visible_containers_for(user)) == [mine]


def test_active_teammate_sees_team_containers(user, other_user, make_container):
    theirs = make_container(other_user)
    team = Team.objects.create(name="t", owner=other_user)
    TeamMembership.objects.create(team=team, user=user)

    assert can_view_container(user, theirs)
    assert can_view_container(user, theirs.pk)


def test_inactive_membership_hides_team_containers(user, other_user, make_container):
    theirs = make_container(other_user)
    team = Team.objects.create(name="t", owner=other_user)
    TeamMembership.objects.create(team=team, user=user, active=False)

    assert not can_view_container(user, theirs)


def test_inactive_team_hides_its_containers(user, other_user, make_container):
    theirs = make_container(other_user)
    team = Team.objects.create(name="t", owner=other_user)
    TeamMembership.objects.create(team=team, user=user)
    team.active = False
    team.save()

    assert not can_view_container(user, theirs)


def test_former_member_containers_are_hidden_from_the_team(user, other_user, make_container):
    mine = make_container(user)
    team = Team.objects.create(name="t", owner=other_user)
    TeamMembership.objects.create(team=team, user=user, active=False)

    assert not can_view_container(other_user, mine)


def test_superuser_sees_every_container(superuser, user, make_container):
    theirs = make_container(user)

    assert can_view_container(superuser, theirs)


def test_anonymous_sees_nothing(user, make_container):
    make_container(user)

    assert visible_containers_for(AnonymousUser()).count() == 0


def test_containers_being_deleted_are_invisible(user, make_container):
    container = make_container(user, deleted_at=timezone.now())

    assert not can_view_container(user, container)


def test_the_socket_access_check_costs_the_owner_one_query(
    user, make_container, django_assert_num_queries
):
    mine = make_container(user)

    with django_assert_num_queries(1):
        assert live_visible_container(user, mine.pk) == mine


def test_the_socket_access_check_asks_the_team_rule_for_anyone_else(
    user, other_user, superuser, make_container
):
    theirs = make_container(other_user)
    team = Team.objects.create(name="t", owner=other_user)
    TeamMembership.objects.create(team=team, user=user)

    assert live_visible_container(user, theirs.pk) == theirs
    assert live_visible_container(superuser, theirs.pk) == theirs
    with pytest.raises(ContainerNotVisible):
        live_visible_container(AnonymousUser(), theirs.pk)
    theirs.deleted_at = timezone.now()
    theirs.save(update_fields=["deleted_at"])
    with pytest.raises(ContainerMissing):
        live_visible_container(user, theirs.pk)
