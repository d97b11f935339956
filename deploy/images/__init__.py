"""Building stand-in base images from Debian packages where no image registry is reachable."""
