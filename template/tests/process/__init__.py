"""Tests that run the service as a real process: entry point, logging, shutdown."""
