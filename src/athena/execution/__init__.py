"""Execution: strategies that run a recall's layer searches, and their aggregation."""
