"""Sweeps: one recipe trained at many points, on this machine or as a Slurm job array.

``spec`` parses and checks what to vary (a grid, or an Optuna search space); ``grid`` and
``search`` are the two engines that hand out points; ``point`` trains one point in its run folder
and records how it ended; ``runner`` runs points N at a time; ``worker`` is a Slurm array task's
entry point; ``report`` sums a sweep up.
"""
