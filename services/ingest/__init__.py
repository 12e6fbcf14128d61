"""ingest: gateway events in, canonical events and channel health out."""
