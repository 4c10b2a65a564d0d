"""URL map. Every route is listed in tests/gisportal/test_permissions.py's matrix."""
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("map/frame/", views.map_frame, name="map_frame"),
    path("layers/<str:kind>.geojson", views.layer_geojson, name="layer_geojson"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/", include("gisportal.api.urls")),
    path("admin/", admin.site.urls),
]

if settings.DEBUG:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

from . import views_coverage  # noqa: E402

urlpatterns += views_coverage.urlpatterns

from . import views_dashboard, views_import, views_review  # noqa: E402

urlpatterns += views_review.urlpatterns + views_import.urlpatterns + views_dashboard.urlpatterns

from . import views_siting  # noqa: E402

urlpatterns += views_siting.urlpatterns

from . import views_jobs  # noqa: E402

urlpatterns += views_jobs.urlpatterns

from . import views_layers  # noqa: E402

urlpatterns += views_layers.urlpatterns

from . import views_audit  # noqa: E402

urlpatterns += views_audit.urlpatterns
