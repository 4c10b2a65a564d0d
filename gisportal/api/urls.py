"""API v1 routes, mounted at ``/api/v1/`` (``path("api/v1/", include("gisportal.api.urls"))``).

Every route here has an entry in tests/gisportal/test_permissions.py's matrix.
"""
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.authtoken.views import ObtainAuthToken

from . import views


class TokenView(ObtainAuthToken):
    """Exchange username and password for an API token (rate-limited)."""

    throttle_scope = "api_token"


urlpatterns = [
    path("", views.IndexView.as_view(), name="api-index"),
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("layers/", views.LayerListView.as_view(), name="api-layers"),
    path("layers/<str:kind>/", views.LayerFeaturesView.as_view(), name="api-layer"),
    path("layers/<str:kind>/<int:pk>/", views.LayerFeatureView.as_view(), name="api-feature"),
    path("projects/", views.ProjectListView.as_view(), name="api-projects"),
    path("projects/<int:pk>/", views.ProjectDetailView.as_view(), name="api-project"),
    path("projects/<int:pk>/decisions/", views.DecisionView.as_view(), name="api-project-decide"),
    path("reviews/", views.ReviewListView.as_view(), name="api-reviews"),
    path("reviews/<int:pk>/", views.ReviewDetailView.as_view(), name="api-review"),
    path("coverage/", views.CoverageView.as_view(), name="api-coverage"),
    path("siting/", views.SitingView.as_view(), name="api-siting"),
    path("exports/", views.ExportView.as_view(), name="api-exports"),
    path("imports/", views.ImportView.as_view(), name="api-imports"),
    path("jobs/", views.JobListView.as_view(), name="api-jobs"),
    path("jobs/<int:pk>/", views.JobDetailView.as_view(), name="api-job"),
    path("jobs/<int:pk>/cancel/", views.JobCancelView.as_view(), name="api-job-cancel"),
    path("jobs/<int:pk>/file/", views.JobFileView.as_view(), name="api-job-file"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
]
