"""Clevis pin `trustee`: a LUKS (or any clevis) key released by a KBS only to an attested machine."""
