"""Tests of the service: unit, API, process and integration tiers."""
