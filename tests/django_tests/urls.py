"""The test project's URLs: Django's admin, where kongtaskd.contrib.django registers the jobs."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
