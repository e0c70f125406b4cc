"""Provider clients and dialect adapters."""
