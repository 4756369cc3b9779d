"""The label audit: which labels of a catalogue are probably wrong, which classes overlap, which
duplicates disagree (issue 16).

`oof` scores every labelled product out of fold from the feature cache, `issues` runs cleanlab's
confident learning on those probabilities, `duplicates` finds identical and nearly identical
products with different labels, and `run` ties them together. The stage sits above training (it
reuses its folds) and below the interfaces: the report renders an audit, the desk queues its
suspects, the CLI wires them.
"""

from prodcat.audit.run import AuditError, AuditOptions, AuditResult, Suspect, run_audit

__all__ = ["AuditError", "AuditOptions", "AuditResult", "Suspect", "run_audit"]
