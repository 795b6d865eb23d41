"""Helpers for testing the service from outside: not imported by the service itself."""
