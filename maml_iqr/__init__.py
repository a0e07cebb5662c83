"""maml_iqr: clean a contaminated anomaly-detection training set with MAML + IQR refinement."""
from maml_iqr import xla_flags

xla_flags.tune_cpu()
