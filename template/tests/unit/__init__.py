"""Unit tests, one module per module of app.core."""
