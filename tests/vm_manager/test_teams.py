from vm_manager.models import Team, TeamMembership


def test_team_owner_gets_an_admin_membership_on_save(user):
    team = Team.objects.create(name="core", owner=user)

    membership = TeamMembership.objects.get(team=team, user=user)
    assert membership.role == TeamMembership.Role.ADMIN
    assert membership.active


def test_team_save_restores_the_owner_admin_membership(user):
    team = Team.objects.create(name="core", owner=user)
    TeamMembership.objects.filter(team=team).update(role="member", active=False)

    team.save()

    membership = TeamMembership.objects.get(team=team, user=user)
    assert (membership.role, membership.active) == ("admin", True)


def test_deactivating_a_team_makes_every_membership_inactive(user, other_user):
    team = Team.objects.create(name="core", owner=user)
    TeamMembership.objects.create(team=team, user=other_user)

    team.active = False
    team.save()

    assert not TeamMembership.objects.filter(team=team, active=True).exists()


def test_a_user_is_a_member_of_a_team_once(user):
    import pytest
    from django.db import IntegrityError

    team = Team.objects.create(name="core", owner=user)
    with pytest.raises(IntegrityError):
        TeamMembership.objects.create(team=team, user=user)
