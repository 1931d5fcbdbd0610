"""Pure Attestation Service logic: bytes, JSON and time in; typed results out. No I/O."""
