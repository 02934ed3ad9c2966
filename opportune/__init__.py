"""Opportune: a code-completion language server measured in characters per opportunity.

Installed, the project adds this one name to the import namespace.  The code lives in the folders the
design names at the top of the repository, ``server/`` and ``telemetry/``; ``opportune/server`` and
``opportune/telemetry`` are links to them, so that ``opportune.server`` and ``opportune.telemetry`` are the
only import paths, in a checkout, an editable install and a wheel alike.
"""
