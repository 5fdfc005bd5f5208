"""The X-ray benchmark protocol (`xrayscreen evaluate`): labels, floors, metrics, reports.

Modules, one job each: ``annotations`` (YOLO / CSV boxes, masks, rescaling),
``labelling`` (protocol window labels), ``floors`` (the four non-learned scores),
``metrics`` (tie-aware ROC AUC, detection at a false-alarm rate), ``heat`` (exact
cell-resolution heat maps), ``dataset`` (scans prepared once at the protocol scale),
``scorers`` (floors, the engine, multi-kind model scorer), ``runner`` (one pass,
every figure), ``report`` (JSON, markdown, PNGs), ``splits`` (the SIXray dev split),
``cli`` (the command).

Research use (prepare once, evaluate many scorers on the same windows)::

    from xrayscreen.evaluation.splits import sixray_dataset
    from xrayscreen.evaluation.runner import evaluate
    from xrayscreen.evaluation.scorers import FloorScorer, ModelScorer

    ds = sixray_dataset("../shared/data/sixray", "val")
    ev = evaluate(ds, [FloorScorer(), ModelScorer(bundle, ["latent", "residual"])])
    ev.summary["kinds"]["residual"]["window"]["a"]["all"]["auc"]
"""
