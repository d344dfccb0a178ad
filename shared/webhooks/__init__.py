"""Webhook policy shared by the API (registration) and the dispatcher (delivery): which
URLs may be called (urls: SSRF rules, origins) and how a delivery is signed (signing)."""
