"""The API docs page (``/docs``): Swagger UI, served with its own files so that it works
offline (refreshed by ``scripts/vendor-swagger-ui``)."""
