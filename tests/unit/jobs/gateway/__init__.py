"""Unit tests of the inference gateway (jobs.gateway)."""
