"""Fetching reference images from user-supplied URLs without becoming an SSRF proxy."""
