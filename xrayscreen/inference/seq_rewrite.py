"""Rewriting runs of layers inside ``nn.Sequential`` containers (engine preparation).

Both model preparations of the engine -- folding batch-norm into the conv before it
(:func:`~xrayscreen.inference.engine.fuse_batchnorm`) and fusing a conv with its
activation (:mod:`~xrayscreen.inference.onednn`) -- replace a module, or a module and
its successor, by one module. This is the one walk they share.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

# rule(module, next_module_or_None) -> (replacement, modules consumed: 1 or 2), or None
# to keep the module as it is (its own children are then searched too).
Rule = Callable[[nn.Module, nn.Module | None], tuple[nn.Module, int] | None]


def rewrite_sequentials(module: nn.Module, rule: Rule) -> nn.Module:
    """Apply ``rule`` inside every ``nn.Sequential`` below ``module``, in place.

    Returns:
        ``module`` itself.
    """
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Sequential):
            mods = list(child)
            out: list[nn.Module] = []
            i = 0
            while i < len(mods):
                hit = rule(mods[i], mods[i + 1] if i + 1 < len(mods) else None)
                if hit is None:
                    out.append(rewrite_sequentials(mods[i], rule))
                    i += 1
                else:
                    out.append(hit[0])
                    i += hit[1]
            setattr(module, name, nn.Sequential(*out))
        else:
            rewrite_sequentials(child, rule)
    return module
