"""The gateway service: login, logout and the current user, and the cart API forwarded
to the cart service with the caller's session propagated."""
