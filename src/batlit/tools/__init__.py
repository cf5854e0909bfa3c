"""Diagnostics and estimates beside training: ``python -m batlit.bench`` (a training step's
time per method), ``sync_check`` (host syncs per step), ``precision_check`` (each precision's
attack strength and speed) and :mod:`.cost` (the run-time estimate ``batlit.train`` prints)."""
