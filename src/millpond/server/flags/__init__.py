"""Feature flags and entitlements: service (service.py), routes (router.py)."""
