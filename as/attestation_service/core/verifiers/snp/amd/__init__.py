"""AMD's public ARK/ASK/ASVK certificates (package data, pinned by fingerprint in `certs.py`)."""
