"""Evaluation: metrics, baselines, ablations, reports."""
