"""The values the library's options take, owned by the library and named once.

A leaf that imports nothing (no torch), so that the harness's config checks
(:func:`batlit.config.validate`) run before torch is imported: a typo costs a second.
"""

ATTACK_LOSSES = ("ce", "kl", "cw")  # batlit.attacks.pgd's losses
PRECISIONS = ("auto", "fp32", "fp32_first", "bf16", "inherit")  # batlit.attacks' precision values
OPTIMIZERS = ("sgd", "adam")  # batlit.methods.AdversarialMethod.configure_optimizers
SCHEDULERS = ("constant", "multistep", "cosine", "onecycle")
