"""Evaluate a run: ``python evaluate.py run=<run dir> [overrides]``, the same as ``rlik-evaluate``.

    python evaluate.py run=outputs/latest                             # final_model.zip on 200 held-out goals
    python evaluate.py run=<run dir> controller=[policy,jacobian]     # the policy beside a classical controller
    python evaluate.py sweep=multirun/<date>                          # every job of a sweep, ranked
    python evaluate.py run=<run dir> export=true                      # policy.npz + policy.onnx of its model
    python evaluate.py run=<run dir> watch=true                       # in PyBullet's window (rlik-enjoy run=...)

Everything else is in ``rlik/evaluate.py`` and ``rlik/evaluation/``.
"""

from rlik.evaluate import cli

if __name__ == "__main__":
    cli()
