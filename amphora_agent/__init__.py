"""An implementation of the haproxy Amphora API 1.0 (OpenStack Octavia's amphora agent API)."""

API_VERSION = "1.0"
