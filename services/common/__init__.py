"""What gateway and cart share: the app factory with probes, metrics and error handling,
and the request and response models of the HTTP API (DESIGN §4)."""
