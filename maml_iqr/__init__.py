"""maml_iqr: clean a contaminated anomaly-detection training set with MAML + IQR refinement.

Importing it changes nothing in the environment; entry points call `maml_iqr.xla_flags.prepare_process()`.
"""
