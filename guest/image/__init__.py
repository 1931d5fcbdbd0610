"""Guest image pulling: registry client, safe layer unpacking, and `pull_image` (see guest/image/pull.py)."""
