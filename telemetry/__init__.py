"""Opportune telemetry: events, the SQLite store, CPO and its factors, experiments, Prometheus metrics.

A library about events: it never imports ``server``.  The write path (``opportune.telemetry.store``,
``opportune.telemetry.metrics``) stays free of pandas and scipy so that the language server starts fast;
the analysis modules (``cpo``, ``experiments``, ``report``, ``export``) load them when used.
"""
