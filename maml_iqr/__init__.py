"""maml_iqr: clean a contaminated anomaly-detection training set with MAML + IQR refinement."""
