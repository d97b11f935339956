"""The cart service: the logged-in user's cart, kept in the shared session, reachable
directly (cookie or `X-Session-Id`) or through the gateway."""
