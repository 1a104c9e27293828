"""Compatibility APIs: the wire formats of the services millpond replaces, so their
original SDKs work against millpond by changing only their base URL."""
