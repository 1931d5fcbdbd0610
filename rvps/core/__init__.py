"""Pure RVPS logic: message parsing, extractors, stored records. No I/O."""
