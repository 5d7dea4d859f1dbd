"""Tests of the keel copier template itself."""
