"""REST routes of the VM manager under /api/."""

urlpatterns: list = []
