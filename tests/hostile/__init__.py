"""Hostile input, hostile outputs (issue 18): see README.md here."""
