"""REST routes of the VM manager under /api/ (DRF router, trailing slash)."""

from rest_framework.routers import SimpleRouter

from vm_manager.api import views

router = SimpleRouter()
router.register("user", views.UserViewSet, basename="user")
router.register("container-types", views.ContainerTypeViewSet, basename="container-type")
router.register("containers", views.ContainerViewSet, basename="container")
router.register("templates", views.TemplateViewSet, basename="template")

urlpatterns = router.urls
