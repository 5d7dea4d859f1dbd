"""Tests against a real PostgreSQL; see conftest.py for how to run them."""
