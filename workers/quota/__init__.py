"""Redis quota engine: atomic multi-limit reservations."""
